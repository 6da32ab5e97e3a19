"""The reference service (tools/sluice-llm) for the e2e tests and the bench.

Service starts sluice-llm on a nats-server and waits for its "ready" line
(printed after its queue subscription has been flushed to the server, so a
request sent afterwards is delivered). expected_tokens() computes the
answer sluice-llm streams for a prompt, so a test checks every token
exactly once. Answer collects one answer's NATS messages (harness rules:
bounded waits).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness as h  # noqa: E402
from harness import expect  # noqa: E402

# tools/sluice-llm.c's LOREM, in order.
LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
         "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in "
         "reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint").split()


def fnv1a(s):
    x = 2166136261
    for b in s.encode("utf-8"):
        x = ((x ^ b) * 16777619) & 0xffffffff
    return x


def expected_tokens(prompt, n):
    """The n tokens sluice-llm --text lorem answers prompt with."""
    seed = fnv1a(prompt)
    return [LOREM[(seed + i) % len(LOREM)] + " " for i in range(n)]


def chat_body(prompt, max_tokens=None, model="sluice-llm", stream=True):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return json.dumps(body).encode()


class Service:
    """sluice-llm on nats_url; args are extra command-line options."""

    def __init__(self, nats_url, *args, timeout=10):
        self.dir = h.tempdir("sluice-llm-")
        self.log_path = os.path.join(self.dir, "llm.stderr")
        cmd = [h.tool("SLUICE_LLM", "sluice-llm"), "--nats", nats_url] + [str(a) for a in args]
        with open(self.log_path, "wb") as lf:
            self.proc = h.spawn(cmd, stdout=subprocess.DEVNULL, stderr=lf)
        h.wait_until(lambda: self.proc.poll() is not None or "ready on" in self.log(), timeout,
                     "sluice-llm's ready line")
        expect(self.proc.poll() is None, "sluice-llm exited %s at start-up:\n%s"
               % (self.proc.returncode, self.log()))

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=10):
        """SIGTERM; the service must exit 0 (a sanitizer's report is an exit 1)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            h.kill_proc(self.proc)
            raise h.TestFailure("sluice-llm did not exit within %d s of SIGTERM" % timeout)
        expect(rc == 0, "sluice-llm exited %s after SIGTERM:\n%s" % (rc, h.tail(self.log(), 30)))
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        h.kill_proc(self.proc)
        return False


class Answer:
    """The messages of one answer on a fresh reply subject of a NatsClient."""

    def __init__(self, nc):
        self.nc = nc
        self.cond = threading.Condition()
        self.msgs = []  # nats_util.Reply, in arrival order
        self.reply, self.token = nc.new_reply(self._got)

    def _got(self, r):
        with self.cond:
            self.msgs.append(r)
            self.cond.notify_all()

    def send(self, subject, body, headers=None):
        self.nc.send_raw(self.nc.pub_bytes(subject, body, self.reply, headers))
        return self

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.msgs):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise h.TestFailure("timed out after %.0f s waiting for %s; got %d messages, "
                                        "last %r" % (timeout, what, len(self.msgs),
                                                     [(m.headers, m.data[:120])
                                                      for m in self.msgs[-3:]]))
                self.cond.wait(left)
            return list(self.msgs)

    def wait_end(self, timeout=15):
        return self.wait(lambda ms: any("sse-end" in m.headers for m in ms), timeout,
                         "a message with Sse-End")

    def wait_count(self, n, timeout=15):
        return self.wait(lambda ms: len(ms) >= n, timeout, "%d messages" % n)
