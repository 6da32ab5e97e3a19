"""The official Durable Streams client reads across a gateway kill, and sees the closure.

A real nats-server with JetStream and two gateways (A and B) serving
/v1/stream/ from the same JetStream stream. npm's @durable-streams/client
(tests/ds/reader.mjs) reads one JSON stream live, in SSE mode and then in
long-poll mode, with every request sent to A until A cannot be reached and
to B after that. Appends alternate between A and B (writers on both
gateways share one stream). Once the reader has printed some items, A is
killed with SIGKILL; the appends go on through B, then B closes the
stream. The reader must print every item exactly once, in order, move to
B, and report the closure (streamClosed) and exit.

The same stream is then read through sluice's own /events route with
Last-Event-ID (the offset's sequence): a plain EventSource and a Durable
Streams client share it.
"""

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import js_util  # noqa: E402
from harness import expect  # noqa: E402

DS_DIR = os.path.join(h.SRC, "tests", "ds")
BEFORE, AFTER = 40, 40


def setup():
    r = subprocess.run(["sh", os.path.join(DS_DIR, "setup.sh")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=280)
    h.log(r.stdout.decode(errors="replace").strip())
    node = shutil.which("node")
    expect(node, "node is not installed (scripts/deps.sh --node)")
    expect(os.path.isdir(os.path.join(DS_DIR, "node_modules", "@durable-streams", "client")),
           "npm package @durable-streams/client is not installed in tests/ds (npm ci failed)")
    return node


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(h.HOST, port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


class Reader:
    """reader.mjs's output, line by line, on a thread."""

    def __init__(self, node, mode, path, bases):
        env = dict(os.environ)
        env.pop("http_proxy", None)
        self.proc = h.spawn([node, os.path.join(DS_DIR, "reader.mjs"), mode, path] + bases,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=DS_DIR)
        self.items, self.switched, self.closed = [], [], None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                o = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "item" in o:
                    self.items.append(o["item"])
                elif "switched" in o:
                    self.switched.append(o)
                elif "closed" in o:
                    self.closed = o

    def count(self):
        with self.lock:
            return len(self.items)


def read_across_kill(node, n, mode):
    # With the DS stream among the JetStream streams, /events resumes it by sequence too.
    common = ["--ds-base-path", "/v1/stream/", "--ds-long-poll-ms", "2000",
              "--jetstream-streams", "DS"]
    gw_a = h.Gateway(n.url, extra_args=["--listen-plain", h.HOST + ":0"] + common)
    gw_b = h.Gateway(n.url, extra_args=["--listen-plain", h.HOST + ":0"] + common)
    plain_a, plain_b = gw_a.plain_port, gw_b.plain_port
    with gw_a, gw_b:
        path = "/v1/stream/fleet-%s-%d" % (mode, int(time.time() * 1000))
        st, _, _ = call(plain_a, "PUT", path, headers={"Content-Type": "application/json"})
        expect(st == 201, "PUT through A: %d" % st)
        bases = ["http://%s:%d" % (h.HOST, plain_a), "http://%s:%d" % (h.HOST, plain_b)]
        reader = Reader(node, mode, path, bases)
        ports = [plain_a, plain_b]
        for i in range(BEFORE):
            st, _, _ = call(ports[i % 2], "POST", path, body=json.dumps({"n": i}),
                            headers={"Content-Type": "application/json"})
            expect(st == 204, "append %d: %d" % (i, st))
        # Fence: the reader has what was appended before A goes.
        h.wait_until(lambda: reader.count() >= BEFORE, 20, "the first %d items" % BEFORE)
        gw_a.proc.kill()
        gw_a.proc.wait(timeout=10)
        h.log("%s: SIGKILL gateway A after %d items" % (mode, reader.count()))
        for i in range(BEFORE, BEFORE + AFTER):
            st, _, _ = call(plain_b, "POST", path, body=json.dumps({"n": i}),
                            headers={"Content-Type": "application/json"})
            expect(st == 204, "append %d through B: %d" % (i, st))
        st, hd, _ = call(plain_b, "POST", path, headers={"Stream-Closed": "true"})
        expect(st == 204 and hd.get("stream-closed") == "true", "close through B: %d" % st)
        h.wait_until(lambda: reader.closed is not None or reader.proc.poll() is not None, 30,
                     "the reader to see the closure")
        try:
            reader.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            h.kill_proc(reader.proc)
        reader.thread.join(timeout=5)
        err = reader.proc.stderr.read().decode(errors="replace")
        expect(reader.closed, "%s: the client never reported the closure (exit %s): %s"
               % (mode, reader.proc.returncode, err[-800:]))
        got = [it["n"] for it in reader.items]
        want = list(range(BEFORE + AFTER))
        expect(got == want, "%s: the client read %d items, want %d once each in order; first "
               "difference at %s" % (mode, len(got), len(want),
                                     next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                          min(len(got), len(want)))))
        expect(reader.switched, "%s: the client never moved to gateway B" % mode)
        h.log("%s: the client read all %d items once, in order, moved to B (%s) and saw the "
              "closure at %s" % (mode, len(got), reader.switched[0].get("why"),
                                 reader.closed["offset"]))
        read_through_events(path, plain_b, BEFORE + AFTER)
        with urllib.request.urlopen("http://%s:%d/metrics" % (h.HOST, gw_b.admin_port),
                                    timeout=10) as m:
            text = m.read().decode()
        got = dict(re.findall(r'^sluice_ds_requests_total\{op="(\w+)"\} (\d+)', text, re.M))
        # B took half the first appends, all the later ones and the close.
        expect(int(got.get("append", 0)) >= BEFORE // 2 + AFTER and int(got.get("close", 0)) == 1,
               "%s: B's sluice_ds_requests_total: %r" % (mode, got))
        h.log("%s: gateway B counted %s appends and %s close" % (mode, got["append"], got["close"]))
        gw_b.check_alive()
        gw_b.stop()  # exit 0 on SIGTERM (under ASan: no leak)


def read_through_events(path, plain, n):
    """The same stream as a sluice subject: /events/ds.d.<token> from Last-Event-ID 0."""
    subject = "ds.d." + path[len("/v1/stream/"):]
    c = http.client.HTTPConnection(h.HOST, plain, timeout=15)
    c.request("GET", "/events/" + subject, headers={"Last-Event-ID": "0"})
    r = c.getresponse()
    expect(r.status == 200, "/events on the stream's subject: %d" % r.status)
    body = r.read()  # the stream ends after the closing message (Sse-End)
    c.close()
    blocks, _ = h.parse_blocks(body)
    events = [e for e in blocks if e.is_event]
    # An append is one event: its JSON messages as one array (event: data).
    got = [x["n"] for e in events for x in json.loads("\n".join(e.data))]
    expect(all(e.event == "data" for e in events), "/events: event names %r"
           % sorted(set(e.event for e in events)))
    expect(got == list(range(n)), "/events: %d events, want the %d appends once each in order"
           % (len(got), n))
    ids = [int(e.id) for e in events]
    expect(ids == sorted(ids), "/events: ids out of order")
    h.log("/events/%s with Last-Event-ID 0: all %d appends as events, ids %d..%d (the "
          "offsets' sequences), then the end" % (subject, n, ids[0], ids[-1]))


def test():
    node = setup()
    n = js_util.JsNode()
    n.start()
    try:
        for mode in ("sse", "long-poll"):
            read_across_kill(node, n, mode)
    finally:
        n.kill()


if __name__ == "__main__":
    h.main(test, deadline_s=200)
