#!/usr/bin/env python3
"""Issue 6 (4): SIGHUP reloads the certificate and key, and the log level.

The gateway starts with certificate A (the harness's dev CA and server
cert) and --config F, where F says log-level = info. One h2 connection
(ops_util.H2Conn, served A) and one curl stream stay open throughout and
must receive every event published between the steps:

  1. SIGHUP with nothing changed: the reload is logged, new connections
     still get A.
  2. B (a new key and certificate from the same CA) replaces the files,
     SIGHUP: new connections get B's fingerprint (python's ssl and
     openssl s_client agree, curl --cacert verifies it); the open
     connection keeps working, and a NEW stream on it works too.
  3. A broken certificate file, then A's certificate with B's key (a
     mismatched pair), then a missing file: each SIGHUP is refused with a
     log line, and new connections still get B.
  4. F says log-level = debug, SIGHUP: a request now leaves debug lines.
     A bad value in F: the reload is refused with a log line (the level
     stays). F says info again: no more debug lines.
  5. 30 SIGHUPs back to back while four threads keep making new TLS
     connections: every handshake succeeds and is served B, the gateway
     stays up, and the open streams still get events.
"""
import os
import re
import signal
import ssl
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import ops_util as u  # noqa: E402
from harness import expect  # noqa: E402

DEBUG_RE = r"(?m)^\S+Z debug "
STORM_HUPS = 30


class Watch:
    """The streams that must survive every reload; each event must reach all of them."""

    def __init__(self, nats, keep, curl):
        self.nats = nats
        self.keep = keep  # H2Conn
        self.streams = []  # H2Streams on keep
        self.curl = curl
        self.n = 0

    def check(self, when):
        self.n += 1
        payload = "ev-%d" % self.n
        needle = ("data: %s\n\n" % payload).encode()
        h.publish(self.nats.url, "rl.a", payload)
        for s in self.streams:
            self.keep.wait_body(s, needle, 10)
        self.curl.wait_bytes(needle, 10)
        expect(self.keep.eof_at is None and not self.keep.goaways,
               "%s: the open connection was closed or got GOAWAY" % when)
        expect(self.curl.alive(), "%s: the curl stream ended" % when)


def hup(gw, pattern, what):
    mark = len(gw.log())
    gw.proc.send_signal(signal.SIGHUP)
    m = gw.wait_log(pattern, timeout=5, start=mark)
    gw.check_alive("after SIGHUP (%s)" % what)
    h.log("SIGHUP (%s): %s" % (what, m.group(0)))
    return mark


def served(gw, want, what):
    fp = u.served_fingerprint(gw)
    expect(fp == want, "%s: a new connection was served %s..., expected %s..."
           % (what, fp[:16], want[:16]))


def test():
    cfg_dir = h.tempdir("sluice-reload-")
    cfg = os.path.join(cfg_dir, "sluice.ini")
    with open(cfg, "w") as f:
        f.write("# test_reload\nlog-level = info\n")
    with h.Nats() as nats, h.Gateway(nats.url, extra_args=("--config", cfg),
                                     heartbeat_ms=60000) as gw:
        fp_a = u.pem_fingerprint(gw.cert)
        with open(gw.cert, "rb") as f:
            pem_a = f.read()
        served(gw, fp_a, "at start")
        expect(not re.search(DEBUG_RE, gw.log()), "debug lines at log-level info")

        keep = h2.H2Conn(gw)
        expect(keep.fingerprint == fp_a, "the first connection was not served A")
        curl = h.CurlStream(gw, "/events/rl.a", max_time=60)
        w = Watch(nats, keep, curl)
        w.streams.append(keep.request("/events/rl.a"))
        keep.wait(lambda c: h.START_RE.match(bytes(w.streams[0].body)), 10, "the start item")
        curl.wait_start()
        nats.wait_subscriptions(["rl.a"])
        w.check("before any reload")

        # 1. nothing changed
        hup(gw, r"SIGHUP: certificate \S+ reloaded", "same files")
        served(gw, fp_a, "after a SIGHUP with the same files")
        w.check("after a SIGHUP with the same files")

        # 2. certificate B
        cert_b, key_b = u.make_server_cert(gw.dir, os.path.join(cfg_dir, "b"))
        fp_b = u.pem_fingerprint(cert_b)
        expect(fp_b != fp_a, "certificate B has A's fingerprint")
        with open(cert_b, "rb") as f:
            pem_b = f.read()
        with open(key_b, "rb") as f:
            key_b_bytes = f.read()
        u.replace_file(gw.key, key_b_bytes)
        u.replace_file(gw.cert, pem_b)
        hup(gw, r"SIGHUP: certificate \S+ reloaded", "certificate B")
        served(gw, fp_b, "after the reload to B")
        got = u.openssl_fingerprint(gw)
        expect(got == fp_b, "openssl s_client was served %s..., expected B %s..."
               % (got[:16], fp_b[:16]))
        r = h.curl(gw, "/nope")
        expect(r.status == 404, "curl --cacert to the reloaded gateway: %r" % r)
        w.check("after the reload to B")
        # A new stream on the connection that was served A.
        w.streams.append(keep.request("/events/rl.a"))
        keep.wait(lambda c: h.START_RE.match(bytes(w.streams[1].body)), 10,
                  "the start item of a new stream on the old connection")
        with h2.H2Conn(gw) as fresh:
            expect(fresh.fingerprint == fp_b, "a new h2 connection was not served B")
            fs = fresh.request("/events/rl.a")
            fresh.wait(lambda c: h.START_RE.match(bytes(fs.body)), 10, "the start item (B)")
            w.check("with a new stream on the old connection")
            fresh.wait_body(fs, b"data: ev-%d\n\n" % w.n, 10)

        # 3. refused reloads: B stays
        bad_cases = [
            ("a broken certificate file",
             lambda: u.replace_file(gw.cert, b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlm"
                                             b"aWNhdGU=\n-----END CERTIFICATE-----\n")),
            ("A's certificate with B's key", lambda: u.replace_file(gw.cert, pem_a)),
            ("a missing certificate file", lambda: os.unlink(gw.cert)),
        ]
        for what, act in bad_cases:
            act()
            mark = hup(gw, r"SIGHUP: keeping the old certificate[^\n]*", what)
            expect(not re.search(r"SIGHUP: certificate \S+ reloaded", gw.log()[mark:]),
                   "%s: the gateway said it reloaded the certificate" % what)
            served(gw, fp_b, "after a SIGHUP with %s" % what)
            w.check("after a SIGHUP with %s" % what)
        u.replace_file(gw.cert, pem_b)

        # 4. the log level from the config file
        expect(not re.search(DEBUG_RE, gw.log()), "debug lines before the level was raised")
        with open(cfg, "w") as f:
            f.write("# test_reload\nlog-level = debug\n")
        # The certificate's line comes after the level is set.
        mark = hup(gw, r"(?s)SIGHUP: log level info -> debug.*SIGHUP: certificate \S+ reloaded",
                   "log-level = debug")
        h.curl(gw, "/nope")
        gw.wait_log(DEBUG_RE + r".*/nope", timeout=5, start=mark)
        w.check("at log-level debug")

        with open(cfg, "w") as f:
            f.write("# test_reload\nlog-level = chatty\n")
        mark = hup(gw, r"SIGHUP: configuration not reloaded[^\n]*", "a bad log-level")
        h.curl(gw, "/nope/still-debug")
        gw.wait_log(DEBUG_RE + r".*/nope/still-debug", timeout=5, start=mark)
        served(gw, fp_b, "after a refused configuration")

        with open(cfg, "w") as f:
            f.write("# test_reload\nlog-level = info\n")
        mark = hup(gw, r"SIGHUP: certificate \S+ reloaded", "log-level = info")
        idx = len(gw.log())
        conns = mu.value(mu.scrape(gw), "sluice_connections_open", protocol="h2")
        r = h.curl(gw, "/nope/quiet")
        rid = r.header("x-request-id")
        h.wait_until(lambda: any(e.get("request_id") == rid
                                 for e in u.read_jsonl(gw.access_log_path)),
                     5, "the access log line of the request at info")
        # Fence (a 0.2 s sleep stood here): the last debug line a request can
        # leave is its connection's "closing", after the access line. Once
        # the gateway counts curl's connection closed, it would be written.
        mu.wait_metric(gw, "sluice_connections_open", conns, protocol="h2")
        late = gw.log()[idx:]
        expect(not re.search(DEBUG_RE, late),
               "debug lines after the level went back to info:\n%s" % h.tail(late, 5))
        w.check("after all reloads")

        # 5. a storm: SIGHUPs back to back while new connections keep arriving.
        results, errors = [], []
        halt = threading.Event()

        def dial():
            while not halt.is_set():
                try:
                    results.append(u.served_fingerprint(gw))
                except (OSError, ssl.SSLError) as e:
                    errors.append(repr(e))
        threads = [threading.Thread(target=dial, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        # Each SIGHUP waits for its reload line: signals sent faster than they are
        # taken merge into one, and every reload here should be a real swap.
        for _ in range(STORM_HUPS):
            mark = len(gw.log())
            gw.proc.send_signal(signal.SIGHUP)
            gw.wait_log(r"SIGHUP: certificate \S+ reloaded", timeout=10, start=mark)
        # Handshakes after the last reload too (a bounded wait; a 0.2 s sleep
        # stood here, in which a busy machine might make none).
        n = len(results)
        h.wait_until(lambda: len(results) >= n + 4 or errors, 15,
                     "handshakes after the last SIGHUP")
        halt.set()
        for t in threads:
            t.join(timeout=10)
        gw.check_alive("after %d SIGHUPs during handshakes" % STORM_HUPS)
        h.log("storm: %d SIGHUPs, %d handshakes, %d failed"
              % (STORM_HUPS, len(results), len(errors)))
        expect(not errors, "handshakes failed during the SIGHUP storm: %r" % errors[:3])
        expect(results and set(results) == {fp_b}, "during the storm connections were served "
               "%r, expected only B" % sorted(set(r[:16] for r in results)))
        w.check("after the storm")
        curl.close()
        keep.close()
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=90)
