"""Helpers for the security tests (test_auth, test_cors, test_floods).

What the shared harness does not have:

  - JWTs built here: HS256/384/512 with hmac, RS256 and ES256 signed by
    the openssl command line with keys generated into a temp dir (the
    ES256 DER signature is turned into the raw r || s that JWS wants);
  - a raw HTTP/2 client over TLS: hand-built frames, HPACK literals
    without indexing (no Huffman, no dynamic table), and enough of a
    frame reader to see SETTINGS, RST_STREAM, GOAWAY and a response's
    first :status. One thread per connection: OpenSSL objects are not
    shared between threads, so reading and writing interleave in pump();
  - Steady: a well-behaved publisher and curl watchers that must see
    every event, gapless, while other clients misbehave.

Everything is started through harness.spawn and stays on 127.0.0.x.
"""

import base64
import hashlib
import hmac
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time

import harness as h
from harness import HOST, TestFailure, expect

# ---------------------------------------------------------------------------
# processes


def run(cmd, data=None, timeout=30):
    """Runs cmd through harness.spawn (killed at exit); returns stdout; fails on non-zero."""
    p = h.spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise TestFailure("%s timed out" % cmd[0])
    expect(p.returncode == 0, "%s exited %d: %s" % (" ".join(cmd), p.returncode,
                                                   err.decode(errors="replace").strip()))
    return out


# ---------------------------------------------------------------------------
# JWT


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


_HS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def claims(subscribe=None, publish=None, exp_in=300, nbf_in=None, **extra):
    """A claim set: exp now + exp_in s, the "sluice" grant, and any extra members."""
    now = int(time.time())
    c = {"exp": now + exp_in}
    if nbf_in is not None:
        c["nbf"] = now + nbf_in
    grant = {}
    if subscribe is not None:
        grant["subscribe"] = list(subscribe)
    if publish is not None:
        grant["publish"] = list(publish)
    c["sluice"] = grant
    c.update(extra)
    return c


def jwt_hs(claim_set, secret, alg="HS256", header=None):
    """A compact JWS HMAC-signed with secret (bytes), alg HS256/384/512."""
    hdr = {"alg": alg, "typ": "JWT"}
    hdr.update(header or {})
    if isinstance(secret, str):
        secret = secret.encode()
    signing = "%s.%s" % (b64u_json(hdr), b64u_json(claim_set))
    sig = hmac.new(secret, signing.encode(), _HS[alg]).digest()
    return signing + "." + b64u(sig)


def jwt_unsigned(claim_set, alg="none"):
    """The alg-none shape: header.claims. with an empty signature."""
    return "%s.%s." % (b64u_json({"alg": alg, "typ": "JWT"}), b64u_json(claim_set))


def der_to_raw(der, size=32):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as raw r || s, size bytes each."""
    def length(buf, i):
        n = buf[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        return int.from_bytes(buf[i + 1:i + 1 + k], "big"), i + 1 + k

    expect(der[0] == 0x30, "ECDSA signature is not a DER SEQUENCE")
    _, i = length(der, 1)
    out = b""
    for _ in range(2):
        expect(der[i] == 0x02, "ECDSA signature member is not an INTEGER")
        n, i = length(der, i + 1)
        v = int.from_bytes(der[i:i + n], "big")
        i += n
        out += v.to_bytes(size, "big")
    return out


class Keys:
    """RSA 2048 and EC P-256 key pairs made with the openssl command line."""

    def __init__(self):
        self.dir = h.tempdir("sluice-keys-")
        self.kind = {}  # name -> "rsa" or "ec"

    def path(self, name):
        return os.path.join(self.dir, name)

    def rsa(self, name, bits=2048):
        """Makes name.key (private) and name.pub (SPKI PEM); returns the .pub path."""
        key, pub = self.path(name + ".key"), self.path(name + ".pub")
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % bits,
             "-out", key])
        run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub])
        self.kind[name] = "rsa"
        return pub

    def ec(self, name):
        key, pub = self.path(name + ".key"), self.path(name + ".pub")
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key])
        run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub])
        self.kind[name] = "ec"
        return pub

    def secret(self, name, value):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(value + b"\n")
        return p

    def sign(self, name, data):
        return run(["openssl", "dgst", "-sha256", "-sign", self.path(name + ".key")], data=data)

    def jwt(self, name, alg, claim_set, header=None):
        """A token signed (SHA-256) with name's private key, whatever alg the header claims."""
        hdr = {"alg": alg, "typ": "JWT"}
        hdr.update(header or {})
        signing = ("%s.%s" % (b64u_json(hdr), b64u_json(claim_set))).encode()
        sig = self.sign(name, signing)
        if self.kind[name] == "ec":
            sig = der_to_raw(sig)
        return signing.decode() + "." + b64u(sig)


# ---------------------------------------------------------------------------
# raw HTTP/2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM = range(12)
ERROR_NAMES = {v: k for k, v in list(globals().items())
               if k in ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
                        "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
                        "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR",
                        "ENHANCE_YOUR_CALM")}


def err_name(code):
    return ERROR_NAMES.get(code, "0x%x" % code)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def settings_payload(pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


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


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def header_block(headers):
    return b"".join(hpack_literal(n, v) for n, v in headers)


def request_headers(gw, path, method="GET", extra=()):
    return [(":method", method), (":scheme", "https"), (":path", path),
            (":authority", "localhost:%d" % gw.port)] + list(extra)


# RFC 7541 Appendix A: the static table's :status entries.
_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


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


class Frame:
    def __init__(self, ftype, flags, sid, payload, t):
        self.type, self.flags, self.sid, self.payload, self.t = ftype, flags, sid, payload, t

    def __repr__(self):
        return "Frame(type=%d flags=0x%x sid=%d len=%d)" % (self.type, self.flags, self.sid,
                                                            len(self.payload))


class RawH2:
    """One TLS connection speaking hand-built HTTP/2 (ALPN h2), or with plain=True
    cleartext h2 with prior knowledge to the gateway's --listen-plain port."""

    def __init__(self, gw, source=HOST, preface=True, settings=(), timeout=5, plain=False):
        self.gw = gw
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        if source != HOST:
            raw.bind((source, 0))
        raw.connect((HOST, gw.plain_port if plain else gw.port))
        self.sock = raw if plain else h.tls_context(gw).wrap_socket(raw,
                                                                     server_hostname="localhost")
        self.timeout = timeout
        self.rbuf = b""
        self.frames = []
        self.closed = False  # reading saw the end: EOF, reset, TLS alert
        self.send_failed = False  # a send failed: the peer is going away (reading may go on)
        self.send_blocked = False  # a send could not complete within the timeout
        self.bytes_in = 0
        self.opened = time.monotonic()
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings)))

    # -- writing

    def send(self, data):
        """Sends all of data; False when the peer is gone or the send stalled (both noted).

        A failed send does not end reading: what the peer sent before it
        closed (a GOAWAY) is usually still there to read.
        """
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

    def request(self, sid, path, method="GET", extra=(), end_stream=True):
        block = header_block(request_headers(self.gw, path, method, extra))
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, sid, block)

    # -- reading

    def pump(self, timeout=0.0):
        """Reads what arrives within timeout s (0: only what is there); parses frames.

        Returns True while the connection is open.
        """
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if getattr(self.sock, "pending", lambda: 0)() == 0:
                try:
                    r, _, _ = select.select([self.sock], [], [], max(left, 0))
                except (OSError, ValueError):
                    self.closed = True
                    break
                if not r:
                    break
            try:
                self.sock.settimeout(max(left, 0.05))
                b = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                if time.monotonic() >= deadline:
                    break
                continue
            except (OSError, ssl.SSLError):
                self.closed = True
                break
            if not b:
                self.closed = True
                break
            self.bytes_in += len(b)
            self.rbuf += b
            self._parse()
        return not self.closed

    def _parse(self):
        now = time.monotonic()
        while len(self.rbuf) >= 9:
            n = int.from_bytes(self.rbuf[:3], "big")
            if len(self.rbuf) < 9 + n:
                break
            ftype, flags = self.rbuf[3], self.rbuf[4]
            sid = struct.unpack(">I", self.rbuf[5:9])[0] & 0x7FFFFFFF
            self.frames.append(Frame(ftype, flags, sid, self.rbuf[9:9 + n], now))
            self.rbuf = self.rbuf[9 + n:]

    def wait(self, pred, timeout):
        """Pumps until pred(self) is truthy or the connection closes; returns pred's value."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self)
            if v or self.closed:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                return v
            self.pump(min(left, 0.2))

    def wait_closed(self, timeout):
        """Reads until the peer closes; True if it did within timeout s."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(min(deadline - time.monotonic(), 0.2))
        return self.closed

    # -- what arrived

    def of_type(self, ftype):
        return [f for f in self.frames if f.type == ftype]

    def goaway(self):
        """(last stream id, error code) of the first GOAWAY, or None."""
        for f in self.of_type(GOAWAY):
            last, code = struct.unpack(">II", f.payload[:8])
            return last & 0x7FFFFFFF, code
        return None

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
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# the well-behaved client


class Steady:
    """A publisher at a steady rate and curl --http2 -N watchers that must see every event.

    Events carry their sequence number as data ("1", "2", ...). Watchers
    are opened before the first event, so each must end up with exactly
    1..N in order: no gap, no duplicate, no reorder.
    """

    def __init__(self, nats, gateways, subject="steady.s", rate=40, max_time=120):
        self.subject = subject
        self.rate = rate
        self.watchers = []
        for gw in gateways:
            s = h.CurlStream(gw, "/events/" + subject, max_time=max_time)
            _, _, off = s.wait_start(timeout=10)
            self.watchers.append((gw, s, off))
        self.seq = 0
        self.stop_flag = threading.Event()
        self.error = None
        self.pub = h.NatsConn(nats.port)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        period = 1.0 / self.rate
        next_t = time.monotonic()
        try:
            while not self.stop_flag.is_set():
                self.seq += 1
                self.pub.pub(self.subject, str(self.seq))
                self.pub.flush()
                next_t += period
                d = next_t - time.monotonic()
                if d > 0:
                    self.stop_flag.wait(d)
        except BaseException as e:  # noqa: B902 (reported by finish())
            self.error = e

    def progress(self):
        """Events each watcher has so far (for log lines)."""
        out = []
        for gw, s, off in self.watchers:
            blocks, _ = h.parse_blocks(s.data()[off:], strict=False)
            out.append(sum(1 for b in blocks if b.is_event))
        return out

    def check_live(self, what):
        """Every watcher is still streaming and has the events published until a moment ago."""
        expect(self.error is None, "the steady publisher failed: %r" % (self.error,))
        target = self.seq
        for gw, s, off in self.watchers:
            expect(s.alive(), "the well-behaved client on port %d stopped after %s"
                   % (gw.port, what))
            s.wait_bytes(b"data: %d\n\n" % target, 10, off)

    def finish(self):
        """Stops publishing; checks every watcher received 1..N in order. Returns N."""
        self.stop_flag.set()
        self.thread.join(timeout=10)
        expect(self.error is None, "the steady publisher failed: %r" % (self.error,))
        n = self.seq
        # Fence: one marker after event n; every watcher reads until it, so
        # a late duplicate or a gap shows in what came before it.
        marker = None
        for gw, s, off in self.watchers:
            s.wait_bytes(b"data: %d\n\n" % n, 10, off)
            blocks, mb, _ = h.read_until_marker(
                s, (lambda m: (self.pub.pub(self.subject, m), self.pub.flush()))
                if marker is None else None, start=off, marker=marker,
                what="the well-behaved client on port %d" % gw.port)
            marker = mb.data[0]
            got = [b.data[0] for b in blocks if b.is_event]
            want = [str(i) for i in range(1, n + 1)]
            if got != want:
                missing = sorted(set(want) - set(got), key=int)
                raise TestFailure("the well-behaved client on port %d got %d of %d events; "
                                  "missing %r, first out of order at %r"
                                  % (gw.port, len(got), n, missing[:10],
                                     next((i for i, (a, b) in enumerate(zip(got, want))
                                           if a != b), None)))
            s.close()
        self.pub.close()
        return n


# ---------------------------------------------------------------------------
# one request with curl, read as it arrives


class Probe:
    """One request with curl --http2 (or --http1.1): status, headers, and body.

    For a 200 SSE answer the body is read until the stream's start item
    (the stream never ends by itself), then curl is stopped; other answers
    are read to their end. curl -i puts the head on stdout as it arrives:
    a -D file is written only when curl exits.
    """

    def __init__(self, gw, path, extra=(), http1=False, method="GET", data=None, what=None):
        args = list(extra)
        if http1:
            args.append("--http1.1")
        if method != "GET":
            args += ["-X", method]
        if data is not None:
            args += ["--data-binary", data]
        self.what = what or "%s %s (%s)" % (method, path[:70], "HTTP/1.1" if http1 else "h2")
        s = h.CurlStream(gw, path, max_time=10, extra=args + ["-i"])
        try:
            def head(b):
                i = b.find(b"\r\n\r\n")
                return i + 4 if i >= 0 else None
            end = s.wait_for(head, 10, "the response head of " + self.what)
            self.version, self.status, self.headers = h.parse_header_dump(s.data()[:end])
            if self.status == 200 and method == "GET" and path.startswith("/events"):
                s.wait_for(lambda b: h.START_RE.match(b[end:]), 10,
                           "the start item of " + self.what)
            else:
                s.wait_for(lambda b: s.eof or None, 10, "the end of the %d body" % self.status)
            self.body = s.data()[end:]
        finally:
            s.close()

    def header(self, name):
        vals = [v for n, v in self.headers if n == name]
        return vals[-1] if vals else None

    def all(self, name):
        return [v for n, v in self.headers if n == name]

    def one_line_body(self):
        text = self.body.decode("utf-8", "replace")
        expect(text.strip() and "\n" not in text.rstrip("\n") and len(text) < 300,
               "%s: %d body is not one short line: %r" % (self.what, self.status, self.body[:200]))


# ---------------------------------------------------------------------------
# start-up refusals


def refuses_to_start(args, want_in_line, what):
    """Runs the gateway with args; it must exit 1 with exactly one error line naming want."""
    cmd = [h.tool("SLUICE_BIN", "sluice")] + list(args)
    p = h.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise TestFailure("%s: the gateway started (still running after 10 s)" % what)
    text = err.decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    h.log("%s: exit %d, stderr %r" % (what, p.returncode, lines))
    expect(p.returncode == 1, "%s: exit status %d, expected 1" % (what, p.returncode))
    expect(len(lines) == 1, "%s: %d stderr lines, expected one: %r" % (what, len(lines), lines))
    expect(lines[0].split()[1:2] == ["error"], "%s: not an error-level log line: %r"
           % (what, lines[0]))
    expect(want_in_line in lines[0], "%s: the error line does not mention %r: %r"
           % (what, want_in_line, lines[0]))
    expect("listening on" not in text, "%s: it printed a listening line" % what)
