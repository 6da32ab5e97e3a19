"""The one NATS client of the e2e tests (text protocol, standard library only).

harness.py's rules hold: every wait is bounded, every socket on 127.0.0.1.

NatsClient: CONNECT with headers and no_responders; a reader thread that
answers PING, counts PONGs, records -ERR lines, and hands every message to
either a request's waiter (by the token of its reply inbox) or, for
subjects the test subscribed to with sub(), to msgs. Publishes (PUB, or
HPUB with headers; event= sets the Sse-Event header the gateway turns into
an SSE event: field) are held and written in one go by flush(), which then
sends PING and waits for its PONG, so on return the server has processed
everything sent before
(NATS handles a connection's protocol in order), and fails the test if
the server answered anything with -ERR. The reply inbox is subscribed to
only on the first request: a publisher never subscribes, so the servers'
subscription lists (harness.Nats.subscriptions) hold only gateways.
Once the socket dies, dead is set and every waiter gets ConnectionLost; a
new NatsClient is the reconnect.

Rejected alternative: a nats CLI or a Python NATS library. Neither is
installed, PyPI is out of reach, and the protocol needed is a page long.
"""

import json
import os
import re
import socket
import threading
import time

from harness import HOST, TestFailure

class ConnectionLost(Exception):
    pass


class NoResponders(Exception):
    pass


class Reply:
    def __init__(self, status, headers, data):
        self.status = status  # int from the "NATS/1.0 503" header line, or None
        self.headers = headers  # {lowercase name: value}
        self.data = data  # bytes

    def json(self):
        return json.loads(self.data.decode("utf-8"))


def _parse_headers(raw):
    lines = raw.decode("utf-8", "replace").split("\r\n")
    status = None
    m = re.match(r"NATS/1\.0(?:\s+(\d{3}))?", lines[0])
    if m and m.group(1):
        status = int(m.group(1))
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


def encode_headers(headers):
    return b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), str(v).encode())
                                      for k, v in headers.items()) + b"\r\n"


_inbox_n = [0]


class NatsClient:
    """One NATS connection (text protocol) with a reader thread; see the module note.

    ports: a client port, or the nodes' client ports; the first that
    answers is used (from index start). timeout bounds the connect, the
    greeting and flush().
    """

    def __init__(self, ports, start=0, name="sluice-e2e", timeout=10):
        if isinstance(ports, int):
            ports = [ports]
        self.sock = None
        err = None
        for i in range(len(ports)):
            port = ports[(start + i) % len(ports)]
            try:
                self.sock = socket.create_connection((HOST, port), timeout=timeout)
                self.port = port
                self.index = (start + i) % len(ports)
                break
            except OSError as e:
                err = e
        if self.sock is None:
            raise ConnectionLost("no NATS node answered on %r: %s" % (ports, err))
        self.sock.settimeout(timeout)
        self.rbuf = b""
        try:
            info = self._line()
        except (OSError, ConnectionLost) as e:
            self.sock.close()
            raise ConnectionLost("no INFO from port %d: %s" % (self.port, e))
        if not info.startswith(b"INFO "):
            self.sock.close()
            raise ConnectionLost("NATS greeting on port %d was %r" % (self.port, info[:80]))
        self.info = json.loads(info[5:].decode())
        self.wlock = threading.Lock()
        self.held = []  # pub() writes not sent yet
        self.held_bytes = 0
        self.cond = threading.Condition()
        self.dead = False
        self.why = ""
        self.pongs = 0
        self.pings_sent = 0
        self.errors = []  # -ERR lines
        self.errors_seen = 0  # -ERR lines flush() has already failed on
        self.waiters = {}  # token -> callable(Reply or Exception)
        _inbox_n[0] += 1
        self.inbox = "_INBOX.e2e%d.%d.%x" % (os.getpid(), _inbox_n[0], id(self) & 0xffffff)
        self.inbox_subscribed = False
        self.next_token = 0
        self.timeout = timeout
        self.sids = {}  # sid -> subject, of sub()
        self.msgs = []  # (subject, payload) of messages on sub() subjects, oldest first
        self.full = []  # the same messages as Reply objects (subject, reply_to, headers, data)
        connect = {"verbose": False, "pedantic": False, "headers": True,
                   "no_responders": True, "name": name, "lang": "python", "version": "0",
                   "protocol": 1}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.flush(timeout)

    # -- reading

    def _line(self):
        while b"\r\n" not in self.rbuf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionLost("closed")
            self.rbuf += chunk
        line, self.rbuf = self.rbuf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.rbuf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionLost("closed")
            self.rbuf += chunk
        out, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return out

    def _read(self):
        try:
            while True:
                line = self._line()
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    parts = line.split()
                    hmsg = parts[0] == b"HMSG"
                    subject = parts[1].decode()
                    if hmsg:
                        hlen, total = int(parts[-2]), int(parts[-1])
                    else:
                        hlen, total = 0, int(parts[-1])
                    body = self._exact(total + 2)[:total]
                    status, hdrs = _parse_headers(body[:hlen]) if hmsg else (None, {})
                    reply = Reply(status, hdrs, body[hlen:])
                    reply.subject = subject
                    reply.reply_to = parts[3].decode() if len(parts) == (6 if hmsg else 5) else None
                    self._dispatch(subject, parts[2], reply)
                elif line == b"PING":
                    self._send(b"PONG\r\n")
                elif line == b"PONG":
                    with self.cond:
                        self.pongs += 1
                        self.cond.notify_all()
                elif line.startswith(b"-ERR"):
                    with self.cond:
                        self.errors.append(line.decode("utf-8", "replace"))
                        self.cond.notify_all()
                # INFO (cluster updates) and +OK need nothing.
        except (OSError, ConnectionLost, ValueError, IndexError) as e:
            self._die("reader: %s" % e)

    def _dispatch(self, subject, sid, reply):
        prefix = self.inbox + "."
        if not subject.startswith(prefix):
            with self.cond:
                if int(sid) in self.sids:
                    self.msgs.append((subject, reply.data))
                    self.full.append(reply)  # with reply_to and headers: for a test's service
                    self.cond.notify_all()
            return
        token = subject[len(prefix):]
        with self.cond:
            w = self.waiters.get(token)
        if w is not None:
            w(reply)

    def _die(self, why):
        with self.cond:
            if self.dead:
                return
            self.dead = True
            self.why = why
            waiters = list(self.waiters.values())
            self.waiters.clear()
            self.cond.notify_all()
        for w in waiters:
            w(ConnectionLost(why))
        try:
            # shutdown wakes the reader thread's recv(); close alone would not.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # -- writing

    def _send(self, data, hold=False):
        """Writes what pub() holds, then data; hold=True only adds data to what is held
        (written at 1 MiB, or by the next write: the order stays the order of calls)."""
        if self.dead:
            raise ConnectionLost(self.why)
        try:
            with self.wlock:
                self.held.append(data)
                self.held_bytes += len(data)
                if hold and self.held_bytes < 1 << 20:
                    return
                out, self.held, self.held_bytes = b"".join(self.held), [], 0
                self.sock.sendall(out)
        except OSError as e:
            self._die("send: %s" % e)
            raise ConnectionLost(str(e))

    @staticmethod
    def pub_bytes(subject, payload, reply=None, headers=None):
        if isinstance(payload, str):
            payload = payload.encode()
        r = (b" " + reply.encode()) if reply else b""
        if headers:
            hb = encode_headers(headers)
            return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (subject.encode(), r, len(hb),
                                                    len(hb) + len(payload), hb, payload)
        return b"PUB %s%s %d\r\n%s\r\n" % (subject.encode(), r, len(payload), payload)

    def send_raw(self, data):
        self._send(data)

    def pub(self, subject, payload, event=None, headers=None):
        """Publishes payload; event sets the Sse-Event header (HPUB), as headers do.

        Held back until flush() or the next other write, so that bulk
        publishes reach the server in large writes, as a real client's do.
        """
        if event is not None:
            headers = dict(headers or {}, **{"Sse-Event": event})
        self._send(self.pub_bytes(subject, payload, headers=headers), hold=True)

    def sub(self, subject):
        """Subscribes to subject; its messages collect in msgs as (subject, payload)."""
        with self.cond:
            sid = len(self.sids) + 2  # 1 is the reply inbox
            self.sids[sid] = subject
        self._send(b"SUB %s %d\r\n" % (subject.encode(), sid))
        self.flush()

    def wait_full(self, pred, timeout=10, what="a message"):
        """Waits (bounded) for a message on a sub() subject with pred(Reply) true; takes it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, m in enumerate(self.full):
                    if pred(m):
                        del self.full[i]
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.dead:
                    raise TestFailure("NATS: no %s within %.0f s (%s)"
                                      % (what, timeout, self.why or "connected"))
                self.cond.wait(left)

    def wait_msg(self, payload, timeout=10):
        """Waits (bounded) until a message with exactly payload has arrived on a sub()
        subject; returns every message received before it (a fence: what came ahead
        of a marker) and forgets those and the marker."""
        if isinstance(payload, str):
            payload = payload.encode()
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                errors = self.errors[self.errors_seen:]
                if errors:  # as flush(): the server refused something
                    self.errors_seen = len(self.errors)
                    raise TestFailure("NATS said %r" % errors)
                for i, (_, data) in enumerate(self.msgs):
                    if data == payload:
                        before, self.msgs = self.msgs[:i], self.msgs[i + 1:]
                        return before
                left = deadline - time.monotonic()
                if left <= 0 or self.dead:
                    raise TestFailure("NATS: no message %r within %.0f s (%s); got %r"
                                      % (payload, timeout, self.why or "connected",
                                         self.msgs[-5:]))
                self.cond.wait(left)

    def flush(self, timeout=None):
        """PING, then waits for its PONG: the server has read everything sent before.

        Fails the test if the server has answered anything with -ERR since
        the last flush (it closes the connection after most of them).
        """
        timeout = self.timeout if timeout is None else timeout
        with self.cond:
            self.pings_sent += 1
            want = self.pings_sent
        self._send(b"PING\r\n")
        with self.cond:
            end = time.monotonic() + timeout
            while self.pongs < want and not self.dead:
                left = end - time.monotonic()
                if left <= 0:
                    raise ConnectionLost("no PONG within %.1f s" % timeout)
                self.cond.wait(left)
            errors, self.errors_seen = self.errors[self.errors_seen:], len(self.errors)
            if errors:
                raise TestFailure("NATS said %r" % errors)
            if self.dead:
                raise ConnectionLost(self.why)

    def new_reply(self, callback):
        """A fresh reply subject whose replies go to callback(Reply or ConnectionLost)."""
        with self.cond:
            self.next_token += 1
            token = str(self.next_token)
            if self.dead:
                raise ConnectionLost(self.why)
            self.waiters[token] = callback
            first = not self.inbox_subscribed
            self.inbox_subscribed = True
        if first:  # before the request that uses it: NATS keeps a connection's order
            self._send(b"SUB " + self.inbox.encode() + b".> 1\r\n")
        return self.inbox + "." + token, token

    def forget(self, token):
        with self.cond:
            self.waiters.pop(token, None)

    def request(self, subject, payload=b"", headers=None, timeout=2):
        """One request; returns the Reply. Raises NoResponders, ConnectionLost, TimeoutError."""
        box = []
        ev = threading.Event()

        def got(r):
            box.append(r)
            ev.set()
        reply, token = self.new_reply(got)
        try:
            self._send(self.pub_bytes(subject, payload, reply, headers))
            if not ev.wait(timeout):
                raise TimeoutError("no reply to %s within %.1f s" % (subject, timeout))
        finally:
            self.forget(token)
        r = box[0]
        if isinstance(r, Exception):
            raise r
        if r.status == 503:
            raise NoResponders(subject)
        return r

    def close(self):
        self._die("closed by the test")
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
