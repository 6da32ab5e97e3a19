#!/usr/bin/env python3
"""Issue 16: TLS records are small after idle and large under load (as nghttpx sizes them).

A TCP relay between the test's h2 client and the gateway reads the TLS
record headers (5 bytes, in clear) of everything the gateway sends. One
SSE stream; then, in turn:

1. A burst of 80 events of 1 KB on the fresh connection, then one event
   of 32 KB, published back to back: the first 64 KiB after the
   connection opened go out in records of at most 1,300 bytes of payload
   (each fits one TCP segment); the 32 KB event, written while the
   connection is busy and past those 64 KiB, goes in larger records.
2. A quiet spell of 1.5 s, then one event of 8 KB: after the idle spell it
   is split into small records again.

Every event arrives, whole and in order, through the relay: record sizing
changes only how the bytes are cut, never the bytes.
"""
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import h2_util as h2  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import HOST, expect  # noqa: E402

SUBJECT = "tls.records"
SMALL = 1300          # payload bytes per record while warming up (conn.c TLS_SMALL_RECORD)
WARMUP = 64 * 1024    # bytes written in small records after an idle spell (TLS_WARMUP_BYTES)
OVERHEAD = 256        # AEAD tag, TLS 1.3 content type, any padding: far less than this
BURST = 80
PAYLOAD = 1000
BIG = 32 * 1024


class Relay:
    """Forwards one connection to the gateway; records (time, type, length) of each
    TLS record the gateway sends."""

    def __init__(self, port):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.target = port
        self.records = []
        self.lock = threading.Lock()
        self.done = False
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, src, dst, parse):
        buf = b""
        try:
            while not self.done:
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                dst.sendall(data)
                if parse:
                    buf += data
                    while len(buf) >= 5:
                        rtype, _, length = struct.unpack(">BHH", buf[:5])
                        if len(buf) < 5 + length:
                            break
                        with self.lock:
                            self.records.append((time.monotonic(), rtype, length))
                        buf = buf[5 + length:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self):
        self.lsock.settimeout(10)
        client, _ = self.lsock.accept()
        upstream = socket.create_connection((HOST, self.target), timeout=10)
        for s in (client, upstream):
            s.settimeout(0.2)
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    def app_records(self, since):
        """Lengths of the application-data records (type 23) seen after time since."""
        with self.lock:
            return [n for t, rtype, n in self.records if rtype == 23 and t >= since]

    def app_times(self, since):
        """When each application-data record after since arrived (relay clock)."""
        with self.lock:
            return [t for t, rtype, _ in self.records if rtype == 23 and t >= since]

    def close(self):
        self.done = True
        self.lsock.close()


class Via:
    """The gateway as the client sees it: everything the same but the port (the relay's)."""

    def __init__(self, gw, port):
        self._gw, self.port = gw, port

    def __getattr__(self, name):
        return getattr(self._gw, name)


def events(stream):
    return h.events_of(bytes(stream.body))


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw:
        relay = Relay(gw.port)
        conn = h2.H2Conn(Via(gw, relay.port))
        try:
            s = conn.request("/events/" + SUBJECT)
            conn.wait(lambda c: s.headers_at and len(s.body) > 0, 10, "the stream's start")
            nats.wait_subscriptions([SUBJECT])
            # The stream's start was written less than a second ago: still warming up.
            start = time.monotonic()
            with nu.NatsClient(nats.port) as pub:
                for i in range(1, BURST + 1):
                    pub.pub(SUBJECT, "%d%s" % (i, "b" * PAYLOAD))
                pub.pub(SUBJECT, "B" * BIG)
                pub.flush()
            conn.wait(lambda c: len(events(s)) >= BURST + 1, 20, "the burst")
            burst = relay.app_records(start)
            h.log("burst: %d records, sizes %s ... %s" % (len(burst), burst[:5], burst[-5:]))
            cut = 0
            sent = 0
            while cut < len(burst) and sent < WARMUP - 2 * SMALL:
                sent += burst[cut]
                cut += 1
            expect(all(n <= SMALL + OVERHEAD for n in burst[:cut]),
                   "records within the first 64 KiB after the connection opened are not all "
                   "small: %s" % burst[:cut])
            if max(burst[cut:] or [0]) <= SMALL + OVERHEAD:
                # Only a pause of over a second (a stalled machine) may start the warm-up again.
                times = relay.app_times(start)
                gap = max((b - a for a, b in zip(times, times[1:])), default=0)
                expect(gap >= 0.9, "past 64 KiB, a 32 KB event on a busy connection was still "
                       "cut into small records: %s" % burst[cut:])
                h.log("a %.1f s pause within the burst restarted the warm-up; not judged" % gap)

            # Idle: no write for more than a second; the next large event goes in small records.
            time.sleep(1.5)
            expect(not relay.app_records(time.monotonic() - 1.2),
                   "the gateway wrote during the quiet spell (a heartbeat?)")
            start = time.monotonic()
            h.publish(nats.url, SUBJECT, "i" * 8000)
            conn.wait(lambda c: len(events(s)) >= BURST + 2, 10, "the event after idle")
            after = relay.app_records(start)
            h.log("after idle: %d records, sizes %s" % (len(after), after))
            expect(len(after) >= 6 and all(n <= SMALL + OVERHEAD for n in after),
                   "an 8 KB event after 1.5 s of quiet was not cut into small records: %s"
                   % after)

            got = events(s)
            want = (["%d%s" % (i, "b" * PAYLOAD) for i in range(1, BURST + 1)] + ["B" * BIG]
                    + ["i" * 8000])
            expect(["\n".join(e.data) for e in got] == want,
                   "events changed on the way: %d events, first difference at %s" % (
                       len(got), next((k for k, (a, b) in enumerate(zip(["\n".join(e.data) for e in got],
                                                                        want)) if a != b),
                                      None)))
        finally:
            conn.close()
            relay.close()


if __name__ == "__main__":
    h.main(test)
