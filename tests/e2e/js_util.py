"""Helpers for the JetStream tests: nats-server with JetStream (one node or a
3-node cluster), a small NATS client for the JetStream API and acknowledged
publishes, and an SSE client that resumes across gateways.

Standard library only, like harness.py, whose rules these keep: every
process is started through harness.spawn and stopped by its PID, every wait
is bounded, every port is a free loopback port, every directory a harness
temp dir.

- JsNode: one nats-server with -js and its own store dir. kill() (SIGKILL)
  and start() again reuse the same ports and the same store, so the node
  rejoins its cluster with its data.
- JsCluster: three JsNodes routed to each other (--cluster, --routes,
  --cluster_name, --server_name); start() returns once every node agrees
  on a JetStream meta leader.
- the NATS client itself is nats_util.NatsClient.
- create_stream(), stream_info(), js_publish(): the JetStream API by
  request/reply, retried while the cluster elects leaders.
- AckPublisher: a thread that publishes "1".."N" at a target rate as
  JetStream publishes (HPUB with Nats-Msg-Id and a reply inbox), keeps
  every unacknowledged message and sends it again (same Nats-Msg-Id, so
  the stream stores it once) after a timeout, a 503 no-responders or a
  lost connection, reconnecting to the next node. acked maps each number
  to the stream sequence its PubAck gave.
- ResumingClient: curl --http2 -N on an SSE path, read incrementally; when
  the response ends (gateway killed or drained) it reconnects to the next
  live gateway of a list with Last-Event-ID: <the last id it saw>.
- gateway_nats_node(): which node a gateway's NATS connection is on, from
  the gateway's own sockets (/proc), not from connection names.

"""

import collections
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

import harness as h
import nats_util as nu
from harness import HOST, TestFailure, expect

# Loopback only: never through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# ---------------------------------------------------------------------------
# nats-server with JetStream


class JsNode:
    """One nats-server with JetStream on fixed free loopback ports.

    The ports and the store dir are chosen once; start() after kill() or
    stop() reuses them, so clients and routes find the node where it was and
    it comes back with its data.
    """

    def __init__(self, name="n1", cluster_name=None, cluster_port=None, routes=(),
                 port=None, monitor_port=None):
        self.name = name
        self.port = port or h.free_port()
        self.monitor_port = monitor_port or h.free_port()
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes)  # cluster ports of the other nodes
        self.dir = h.tempdir("sluice-js-%s-" % name)
        self.store = os.path.join(self.dir, "store")
        self.proc = None
        self.runs = 0
        self.log_path = None

    @property
    def url(self):
        return "nats://%s:%d" % (HOST, self.port)

    def command(self):
        cmd = ["nats-server", "-a", HOST, "-p", str(self.port), "-m", str(self.monitor_port),
               "-js", "-sd", self.store, "--server_name", self.name]
        if self.cluster_name:
            cmd += ["--cluster", "nats://%s:%d" % (HOST, self.cluster_port),
                    "--cluster_name", self.cluster_name]
            if self.routes:
                cmd += ["--routes", ",".join("nats://%s:%d" % (HOST, p) for p in self.routes)]
        return cmd

    def log(self):
        if not self.log_path:
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def start(self, timeout=15):
        """Starts the node and waits until it says it is ready (our process, our port)."""
        expect(not self.alive(), "nats-server %s already running" % self.name)
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            self.runs += 1
            self.log_path = os.path.join(self.dir, "nats-%d.log" % self.runs)
            with open(self.log_path, "wb") as lf:
                self.proc = h.spawn(self.command(), stdout=lf, stderr=subprocess.STDOUT)
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "Server is ready" in self.log() and h.tcp_open(self.port):
                    h.log("nats-server %s (pid %d) ready on port %d (run %d)"
                          % (self.name, self.proc.pid, self.port, self.runs))
                    return self
                time.sleep(0.05)
            last = self.log()
            h.kill_proc(self.proc)
            # After a kill the old listening sockets may linger for a moment.
            if time.monotonic() >= deadline or "address already in use" not in last:
                break
            time.sleep(0.3)
        raise TestFailure("nats-server %s did not start on port %d within %.0f s:\n%s"
                          % (self.name, self.port, timeout, h.tail(last, 10)))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL by PID, then reap."""
        if self.alive():
            h.log("SIGKILL nats-server %s (pid %d, port %d)" % (self.name, self.proc.pid,
                                                                 self.port))
        h.kill_proc(self.proc)

    def stop(self, timeout=10):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            h.kill_proc(self.proc)

    def restart(self, timeout=15):
        self.kill()
        return self.start(timeout)

    def monitor(self, path, timeout=3):
        url = "http://%s:%d%s" % (HOST, self.monitor_port, path)
        with _NO_PROXY.open(url, timeout=timeout) as r:
            return json.loads(r.read().decode())

    def meta_leader(self):
        """The JetStream meta leader this node knows of ('' if none, None if unreachable)."""
        try:
            jsz = self.monitor("/jsz")
        except (OSError, ValueError):
            return None
        if not self.cluster_name:
            return self.name if "config" in jsz else None
        return (jsz.get("meta_cluster") or {}).get("leader") or ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        h.kill_proc(self.proc)
        return False


def single_node(timeout=15):
    """A started one-node JetStream server."""
    n = JsNode("js1")
    n.start(timeout)
    h.wait_until(lambda: n.meta_leader(), timeout, "JetStream on %s" % n.name, interval=0.1)
    return n


class JsCluster:
    """Three JetStream nodes on loopback, routed to each other."""

    def __init__(self, size=3, name="sluice-e2e"):
        cports = [h.free_port() for _ in range(size)]
        self.name = name
        self.nodes = []
        for i in range(size):
            self.nodes.append(JsNode("n%d" % (i + 1), cluster_name=name,
                                     cluster_port=cports[i],
                                     routes=[p for j, p in enumerate(cports) if j != i]))

    @property
    def urls(self):
        return [n.url for n in self.nodes]

    @property
    def url(self):
        """All nodes, comma-separated, as --nats takes them."""
        return ",".join(self.urls)

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout=30):
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            n.start(max(1.0, deadline - time.monotonic()))
        self.wait_meta_leader(max(1.0, deadline - time.monotonic()))
        return self

    def wait_meta_leader(self, timeout=30):
        """Waits until every live node names the same meta leader; returns its name."""
        def agreed():
            leaders = {n.meta_leader() for n in self.nodes if n.alive()}
            if len(leaders) == 1:
                (ldr,) = leaders
                return ldr or None
            return None
        ldr = h.wait_until(agreed, timeout, "a JetStream meta leader all nodes agree on",
                           interval=0.2)
        h.log("JetStream cluster %s: meta leader %s" % (self.name, ldr))
        return ldr

    def stream_leader(self, stream):
        """The server name of a stream's leader, as the live nodes' /jsz reports it."""
        for n in self.nodes:
            if not n.alive():
                continue
            try:
                jsz = n.monitor("/jsz?streams=1")
            except (OSError, ValueError):
                continue
            for acc in jsz.get("account_details") or []:
                for s in acc.get("stream_detail") or []:
                    if s.get("name") == stream:
                        ldr = (s.get("cluster") or {}).get("leader")
                        if ldr:
                            return ldr
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for n in self.nodes:
            h.kill_proc(n.proc)
        return False


# ---------------------------------------------------------------------------
# the JetStream API


class JsApiError(Exception):
    def __init__(self, err):
        self.err = err or {}
        self.code = self.err.get("code")
        Exception.__init__(self, "JetStream API error %s" % json.dumps(self.err))


def js_api(conn, op, body=None, timeout=2):
    """Calls $JS.API.<op>; returns the JSON reply. Raises JsApiError on an error reply."""
    data = b"" if body is None else json.dumps(body).encode()
    r = conn.request("$JS.API." + op, data, timeout=timeout).json()
    if r.get("error"):
        raise JsApiError(r["error"])
    return r


def _retrying(what, ports, fn, timeout):
    """Runs fn(conn) until it returns, reconnecting and retrying transient failures."""
    deadline = time.monotonic() + timeout
    start = 0
    last = None
    while time.monotonic() < deadline:
        try:
            with nu.NatsClient(ports, start=start) as c:
                while time.monotonic() < deadline:
                    try:
                        return fn(c)
                    except (nu.NoResponders, TimeoutError) as e:
                        last = e
                    except JsApiError as e:
                        # 503/500: no leader yet, or the cluster is still forming.
                        if e.code not in (500, 503, 504):
                            raise
                        last = e
                    time.sleep(0.2)
        except nu.ConnectionLost as e:
            last = e
            start += 1
            time.sleep(0.2)
    raise TestFailure("%s: still failing after %.0f s: %s" % (what, timeout, last))


def create_stream(ports, name, subjects, replicas=1, max_msgs=None, storage="file", timeout=30,
                  **extra):
    """Creates a stream (waiting out leader elections); returns its info JSON."""
    cfg = {"name": name, "subjects": list(subjects), "num_replicas": replicas,
           "storage": storage, "retention": "limits", "discard": "old"}
    if max_msgs is not None:
        cfg["max_msgs"] = max_msgs
    cfg.update(extra)
    r = _retrying("creating stream %s" % name, ports,
                  lambda c: js_api(c, "STREAM.CREATE." + name, cfg, timeout=5), timeout)
    h.log("stream %s on %r created (R%d%s)" % (name, subjects, replicas,
                                              ", max_msgs %d" % max_msgs if max_msgs else ""))
    if replicas > 1:
        # A created R3 stream may still be electing its leader: wait for an info answer.
        stream_info(ports, name, timeout=timeout)
    return r


def stream_info(ports, name, timeout=10):
    return _retrying("stream info %s" % name, ports,
                     lambda c: js_api(c, "STREAM.INFO." + name, timeout=2), timeout)


def js_publish(conn, subject, payload, msg_id=None, timeout=10):
    """A JetStream publish on an open connection, retried on 503 or timeout; returns seq."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = conn.request(subject, payload, headers=headers, timeout=2).json()
        except (nu.NoResponders, TimeoutError) as e:
            last = e
            time.sleep(0.1)
            continue
        if r.get("error"):
            last = r["error"]
            time.sleep(0.1)
            continue
        expect(isinstance(r.get("seq"), int), "PubAck without seq: %r" % r)
        return r["seq"]
    raise TestFailure("JetStream publish on %s not acknowledged within %.0f s: %s"
                      % (subject, timeout, last))


def publish_batch(conn, subject, payloads, msg_id_prefix=None):
    """Acknowledged publishes, one after another; returns [seq] in order."""
    out = []
    for i, p in enumerate(payloads):
        mid = "%s-%d" % (msg_id_prefix, i) if msg_id_prefix else None
        out.append(js_publish(conn, subject, p, mid))
    return out


# ---------------------------------------------------------------------------
# the paced, acknowledged publisher


RESEND_NOW = -1.0  # a pending message's due time after a recovery: send again, not late


class AckPublisher(threading.Thread):
    """Publishes "1".."count" on subject at rate per second as JetStream publishes.

    Every message carries Nats-Msg-Id "<prefix>-<n>" and its own reply
    inbox, and stays pending until its PubAck. While all goes well,
    messages are pipelined at the target rate. After a failure (a 503
    no-responders, an error reply, no ack within ack_timeout s, a lost
    connection, after which it connects to the next node of ports) it
    probes: only the oldest pending message is sent again, every 0.2 s,
    until one is acknowledged; then every pending message is sent again in
    order, with the same Nats-Msg-Id, so the stream stores each once while
    its dedupe window lasts (2 min), and pacing goes on (catching up).
    acked: {n: stream seq}. Stops by itself once all are acked, or after
    give_up_s.
    """

    def __init__(self, ports, subject, count, rate=1000, prefix=None, ack_timeout=1.0,
                 give_up_s=90):
        threading.Thread.__init__(self, daemon=True)
        self.ports = list(ports)
        self.subject = subject
        self.count = count
        self.rate = rate
        self.prefix = prefix or "e2e%d-%d" % (os.getpid(), int(time.time() * 1000))
        self.ack_timeout = ack_timeout
        self.give_up_s = give_up_s
        self.lock = threading.Lock()
        self.acked = {}  # n -> seq
        self.duplicate_acks = 0  # PubAcks with "duplicate": true (a resend already stored)
        self.pending = collections.OrderedDict()  # n -> monotonic time it is due to be sent
        self.attempts = collections.Counter()
        self.trouble = False
        self.troubles = 0  # how many times it went from pipelining to probing
        self.next_n = 1
        self.sent = 0  # HPUBs written, resends included
        self.resends = 0
        self.timeouts = 0
        self.no_responders = 0
        self.error_replies = 0
        self.conn_errors = 0
        self.reconnects = 0
        self.nodes_used = []
        self.conn = None
        self.stop_flag = threading.Event()
        self.done = threading.Event()
        self.t_start = None
        self.t_all_sent = None
        self.t_end = None
        self.error = None

    def _set_trouble(self):
        if not self.trouble:
            self.trouble = True
            self.troubles += 1

    # -- replies (reader thread)

    def _on_reply(self, n, r):
        now = time.monotonic()
        with self.lock:
            if n in self.acked or isinstance(r, Exception):
                return  # a lost connection is handled by the loop's reconnect
            if r.status == 503:
                self.no_responders += 1
                self._set_trouble()
                if n in self.pending:
                    self.pending[n] = now + 0.2
                return
            try:
                ack = r.json()
            except ValueError:
                ack = {"error": {"description": "not JSON: %r" % r.data[:80]}}
            if ack.get("error") or not isinstance(ack.get("seq"), int):
                self.error_replies += 1
                self._set_trouble()
                if n in self.pending:
                    self.pending[n] = now + 0.2
                return
            self.acked[n] = ack["seq"]
            if ack.get("duplicate"):
                self.duplicate_acks += 1
            self.pending.pop(n, None)
            if self.trouble:
                self.trouble = False
                for k in self.pending:
                    self.pending[k] = RESEND_NOW

    # -- the loop

    def _connect(self):
        start = 0 if self.conn is None else (self.conn.index + 1)
        if self.conn is not None:
            self.conn.close()
            self.reconnects += 1
            h.log("publisher: connection to port %d lost (%s), reconnecting"
                  % (self.conn.port, self.conn.why))
        self.conn = None
        while not self.stop_flag.is_set():
            try:
                self.conn = nu.NatsClient(self.ports, start=start, name="sluice-e2e-ackpub",
                                       timeout=2)
                self.nodes_used.append(self.conn.port)
                with self.lock:
                    if self.pending:
                        self._set_trouble()
                    for n in self.pending:
                        self.pending[n] = RESEND_NOW
                return
            except nu.ConnectionLost:
                self.conn_errors += 1
                start += 1
                time.sleep(0.1)

    def _send(self, ns):
        conn = self.conn
        out = []
        for n in ns:
            reply, _ = conn.new_reply(lambda r, n=n: self._on_reply(n, r))
            out.append(nu.NatsClient.pub_bytes(self.subject, str(n), reply,
                                            {"Nats-Msg-Id": "%s-%d" % (self.prefix, n)}))
        conn.send_raw(b"".join(out))

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: B902 (reported to the test, never lost)
            self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            self.t_end = time.monotonic()
            if self.conn is not None:
                self.conn.close()
            self.done.set()

    def _run(self):
        self._connect()
        self.t_start = time.monotonic()
        deadline = self.t_start + self.give_up_s
        while not self.stop_flag.is_set():
            now = time.monotonic()
            if now > deadline:
                break
            if self.conn is None or self.conn.dead:
                self._connect()
                continue
            with self.lock:
                if self.next_n > self.count and not self.pending:
                    break
                send = []
                if not self.trouble:
                    send = [n for n, at in self.pending.items() if at <= now]
                    if any(self.pending[n] != RESEND_NOW for n in send):
                        self.timeouts += 1  # a pipelined message got no reply in time
                        self._set_trouble()
                if self.trouble:
                    # Probe with the oldest pending message only, when it is due.
                    first = next(iter(self.pending), None)
                    send = [first] if first is not None and self.pending[first] <= now else []
                    if first is None:
                        self.trouble = False
                if not self.trouble:
                    upto = min(self.count, int((now - self.t_start) * self.rate) + 1)
                    while self.next_n <= upto:
                        send.append(self.next_n)
                        self.next_n += 1
                    if self.next_n > self.count and self.t_all_sent is None:
                        self.t_all_sent = now
                for n in send:
                    if self.attempts[n]:
                        self.resends += 1
                    self.attempts[n] += 1
                    self.pending[n] = now + (0.2 if self.trouble else self.ack_timeout)
                self.sent += len(send)
            if send:
                try:
                    self._send(send)
                except nu.ConnectionLost:
                    continue
            time.sleep(0.001)

    def stop(self, timeout=10):
        self.stop_flag.set()
        self.join(timeout)

    def summary(self):
        with self.lock:
            return ("published %d/%d acked (%d HPUBs, %d resends, %d probing spells, "
                    "%d no-responders, %d error replies, %d ack timeouts, %d duplicate acks, "
                    "%d reconnects via ports %r) in %.1f s"
                    % (len(self.acked), self.count, self.sent, self.resends, self.troubles,
                       self.no_responders, self.error_replies, self.timeouts,
                       self.duplicate_acks, self.reconnects, self.nodes_used,
                       (self.t_end or time.monotonic()) - (self.t_start or time.monotonic())))


# ---------------------------------------------------------------------------
# SSE over curl, resuming across gateways


class Connection:
    """One curl run of a ResumingClient."""

    def __init__(self, index, gw, last_id):
        self.index = index
        self.gw = gw
        self.port = gw.port
        self.resumed_from = last_id
        self.t_spawn = time.monotonic()
        self.t_start = None  # when the start item arrived
        self.start_id = None
        self.t_end = None
        self.rc = None
        self.err = ""
        self.events = 0
        self.retries = []  # retry: values after the start item (drain)
        self.bad_start = False  # the first block was not the start item
        self.notes = []  # non-empty comments (": subscription unavailable", drain notices)

    def describe(self):
        dur = (self.t_end or time.monotonic()) - self.t_spawn
        wait = ("start item after %.2f s" % (self.t_start - self.t_spawn)) if self.t_start \
            else "no start item"
        return ("#%d port %d from %s: %s, start id %s, %d events, %.2f s, curl exit %s%s%s"
                % (self.index, self.port, self.resumed_from, wait, self.start_id, self.events,
                   dur, self.rc, (" (%s)" % self.err) if self.err else "",
                   (", comments %r" % self.notes[:3]) if self.notes else ""))


class ResumingClient:
    """An SSE client on path that follows a changing list of gateways.

    targets() returns the current gateways (harness.Gateway objects; the
    test replaces a restarted one). On the first connect it uses query
    (e.g. "?last_event_id=earliest") if given; after any end of the
    response it waits delay s and connects to the next alive gateway after
    the one it was on, with Last-Event-ID: <last id seen>. Every block is
    recorded: events as (id, data, arrival time, connection index), resets
    separately. Runs until stop() or deadline_s.
    """

    def __init__(self, targets, path, deadline_s=120, delay=0.2, first_query=""):
        self.targets = targets
        self.path = path
        self.first_query = first_query
        self.delay = delay
        self.deadline = time.monotonic() + deadline_s
        self.lock = threading.Condition()
        self.events = []  # (id str, data str, t, connection index)
        self.resets = []  # (block dict, connection index)
        self.others = []  # blocks that are neither events, heartbeats, nor start items
        self.conns = []
        self.last_id = None
        self.current = None  # the Connection in progress
        self.proc = None
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _pick(self, after):
        gws = list(self.targets())
        if not gws:
            return None
        start = 0
        if after is not None:
            for i, g in enumerate(gws):
                if g is after:
                    start = i + 1
        for k in range(len(gws)):
            g = gws[(start + k) % len(gws)]
            if g.proc is not None and g.alive() and g.port:
                return g
        return None

    def _run(self):
        prev = None
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline:
            gw = self._pick(prev)
            if gw is None:
                time.sleep(0.05)
                continue
            self._one(gw)
            prev = gw
            self.stop_flag.wait(self.delay)

    def _one(self, gw):
        with self.lock:
            conn = Connection(len(self.conns), gw, self.last_id)
            self.conns.append(conn)
            self.current = conn
            last_id = self.last_id
        max_time = max(1, int(self.deadline - time.monotonic()) + 1)
        cmd = h.curl_base(gw) + ["-N", "-f", "--max-time", str(max_time)]
        path = self.path
        if last_id is not None:
            cmd += ["-H", "Last-Event-ID: %s" % last_id]
        elif self.first_query:
            path += self.first_query
        cmd.append(gw.url(path))
        p = h.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self.lock:
            self.proc = p
        parser = h.SseFeed()
        fd = p.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            now = time.monotonic()
            blocks = parser.feed(chunk)
            with self.lock:
                for b in blocks:
                    self._block(conn, b, now)
                self.lock.notify_all()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            h.kill_proc(p)
        err = p.stderr.read().decode("utf-8", "replace").strip()
        with self.lock:
            conn.t_end = time.monotonic()
            conn.rc = p.returncode
            conn.err = err.splitlines()[-1] if err else ""
            self.current = None
            self.proc = None
            self.lock.notify_all()
        h.log("client connection %s" % conn.describe())

    def _block(self, conn, b, now):
        conn.notes += [c for c in b.comments if c]
        if conn.t_start is None:
            # The start item: "retry: N\nid: P\n\n".
            if b.retry is not None and b.data is None and b.event is None:
                conn.t_start = now
                conn.start_id = b.id
                if b.id is not None:
                    self.last_id = b.id
                return
            # Not the start item: recorded as a defect, then handled as any block.
            conn.t_start = now
            conn.bad_start = True
            self.others.append((b, conn.index))
        if b.id is not None:
            self.last_id = b.id
        if b.event == "reset":
            self.resets.append((b, conn.index))
            return
        if b.retry is not None:
            conn.retries.append(b.retry)
        if b.data is not None:
            if b.event is not None or b.id is None:
                self.others.append((b, conn.index))
            conn.events += 1
            self.events.append((b.id, "\n".join(b.data), now, conn.index))
            return
        if b.id is None and b.event is None and not b.unknown and (
                b.comments or b.retry is not None):
            return  # a heartbeat, a comment, a drain's retry hint
        self.others.append((b, conn.index))

    def connected_to(self):
        """The gateway of the connection whose start item has arrived, or None."""
        with self.lock:
            c = self.current
            return c.gw if c is not None and c.t_start is not None else None

    def wait(self, pred, timeout, what):
        """Waits until pred(self) (called under the lock) is truthy."""
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                v = pred(self)
                if v:
                    return v
                left = end - time.monotonic()
                if left <= 0:
                    raise TestFailure("timed out after %.1f s waiting for the client: %s"
                                      % (timeout, what))
                self.lock.wait(min(left, 0.1))

    def wait_connected(self, gw, timeout=10):
        """Waits until the client's live connection (start item received) is to gw."""
        return self.wait(lambda s: s.current is not None and s.current.gw is gw
                         and s.current.t_start is not None,
                         timeout, "a connection to gateway port %s" % gw.port)

    def snapshot(self):
        with self.lock:
            return list(self.events), list(self.resets), list(self.others), list(self.conns)

    def stop(self):
        self.stop_flag.set()
        with self.lock:
            p = self.proc
        if p is not None:
            h.kill_proc(p)
        self.thread.join(timeout=10)


# ---------------------------------------------------------------------------
# which node a gateway is connected to


def _socket_inodes(pid):
    out = set()
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            t = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", t)
        if m:
            out.add(m.group(1))
    return out


def tcp_peers(pid):
    """The remote ports of the process's established IPv4 TCP connections to 127.0.0.1."""
    inodes = _socket_inodes(pid)
    peers = []
    with open("/proc/net/tcp") as f:
        next(f)
        for ln in f:
            parts = ln.split()
            rem, state, inode = parts[2], parts[3], parts[9]
            if inode in inodes and state == "01":  # ESTABLISHED
                ip, port = rem.split(":")
                if ip == "0100007F":
                    peers.append(int(port, 16))
    return peers


def gateway_nats_node(gw, cluster, timeout=10):
    """The JsNode whose client port the gateway is connected to (bounded wait)."""
    by_port = {n.port: n for n in cluster.nodes}

    def find():
        hits = [by_port[p] for p in tcp_peers(gw.proc.pid) if p in by_port]
        return hits[0] if len(hits) == 1 else None
    return h.wait_until(find, timeout, "gateway pid %d to hold one connection to a NATS node"
                        % gw.proc.pid, interval=0.1)


# ---------------------------------------------------------------------------
# checking what a client received


def check_exact(events, want, what):
    """events: [(id str, data str)], want: [(seq, data)] — equal, in order, ids decimal."""
    got = [(e[0], e[1]) for e in events]
    exp = [(str(s), d) for s, d in want]
    if got != exp:
        i = next((k for k, (a, b) in enumerate(zip(got, exp)) if a != b), min(len(got), len(exp)))
        raise TestFailure("%s: got %d events, expected %d; first difference at index %d: got "
                          "%r, expected %r" % (what, len(got), len(exp), i, got[i:i + 3],
                                               exp[i:i + 3]))
