"""The service manager's end of the sd_notify protocol, for the e2e tests.

Standard library only, like harness.py. A Manager binds a datagram socket
to give a gateway as NOTIFY_SOCKET and records every message it sends
(READY=1, STOPPING=1, WATCHDOG=1, STATUS=...) with its arrival time.
"""

import os
import socket
import time

from harness import expect


class Manager:
    """The service manager's end of NOTIFY_SOCKET: records every message with its arrival time."""

    def __init__(self, d):
        self.path = os.path.join(d, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []  # (monotonic s, {KEY: value})

    def pump(self, timeout):
        """Reads what arrives within timeout s."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            kv = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.msgs.append((time.monotonic(), kv))

    def wait(self, key, timeout, after=0.0):
        """Waits for a message with key (arrived after monotonic `after`); returns its time."""
        end = time.monotonic() + timeout
        while True:
            for t, kv in self.msgs:
                if key in kv and t > after:
                    return t
            left = end - time.monotonic()
            expect(left > 0, "no %s= from the gateway within %.1f s (got %r)"
                   % (key, timeout, [kv for _, kv in self.msgs][-5:]))
            self.pump(min(left, 0.2))

    def count(self, key, since, until=None):
        return sum(1 for t, kv in self.msgs
                   if key in kv and t > since and (until is None or t <= until))
