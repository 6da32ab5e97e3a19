"""Helpers for the security tests (test_auth, test_cors, test_floods).

What the shared harness does not have:

  - JWTs built here: HS256/384/512 with hmac, RS256 and ES256 signed by
    the openssl command line with keys generated into a temp dir (the
    ES256 DER signature is turned into the raw r || s that JWS wants);
  - Steady: a well-behaved publisher and curl watchers that must see
    every event, gapless, while other clients misbehave.

Everything is started through harness.spawn and stays on 127.0.0.x.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time

import harness as h
import nats_util as nu
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
        self.pub = nu.NatsClient(nats.port)
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
        # Bounds, not latency assertions: a loaded run once needed more than 10 s.
        s = h.CurlStream(gw, path, max_time=25, extra=args + ["-i"])
        try:
            def head(b):
                i = b.find(b"\r\n\r\n")
                return i + 4 if i >= 0 else None
            end = s.wait_for(head, 20, "the response head of " + self.what)
            self.version, self.status, self.headers = h.parse_header_dump(s.data()[:end])
            if self.status == 200 and method == "GET" and path.startswith("/events"):
                s.wait_for(lambda b: h.START_RE.match(b[end:]), 20,
                           "the start item of " + self.what)
            else:
                s.wait_for(lambda b: s.eof or None, 20, "the end of the %d body" % self.status)
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
