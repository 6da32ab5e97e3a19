#!/usr/bin/env python3
"""Issue 18: the systemd notify protocol (Type=notify, WatchdogSec).

The test is the service manager: a datagram socket whose path is the
gateway's NOTIFY_SOCKET, and WATCHDOG_USEC=1000000 in its environment
(pings due every 250 ms; a worker loop silent for 1 s stops them).

ready_only_once_serving: READY=1 arrives once, and at that moment the
listener already serves: a request sent the instant READY=1 is read gets
its stream, and /readyz says 200.

watchdog_pings_while_loops_run: WATCHDOG=1 arrives at least 4 times in
1.5 s with two idle workers.

stuck_worker_stops_the_pings: SIGUSR2 (the SLUICE_TEST_HOOKS hook) blocks
worker 0's loop inside a callback. The gateway logs `watchdog: worker 0's
loop has not gone round`, and from that line on no WATCHDOG=1 arrives for
2 s (systemd would kill and restart it).

stopping_on_sigterm: SIGTERM sends STOPPING=1 (before the process exits:
the drain is under way, /readyz already 503), the drain releases the
stalled worker and the gateway exits 0.

Needs a build with libsystemd (SLUICE_SYSTEMD, the default when
libsystemd-dev is installed) and SLUICE_TEST_HOOKS (the default for
development trees); the gateway's log says which is missing.
"""

import os
import re
import signal
import time

import harness as h
from harness import expect
import metrics_util as m
from notify_util import Manager

WATCHDOG_USEC = 1000000


def test():
    d = h.tempdir("sluice-notify-")
    mgr = Manager(d)
    os.environ["NOTIFY_SOCKET"] = mgr.path
    os.environ["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    with h.Nats() as nats, h.Gateway(nats.url, workers=2, drain_ms=1000) as gw:
        h.log("-- ready_only_once_serving")
        t_ready = mgr.wait("READY", 10)
        # At once: the listener accepts and the gateway serves a stream.
        code = os.system("curl -s -o /dev/null -m 5 --cacert %s https://localhost:%d/healthz"
                         " -w '%%{http_code}' > %s/code" % (gw.ca, gw.port, d))
        st, body, _ = m.admin_get(gw, "/readyz")
        expect(st == 200, "/readyz right after READY=1: %d %r" % (st, body))
        with open(os.path.join(d, "code")) as f:
            got = f.read().strip()
        expect(code == 0 and got in ("200", "404"),
               "a request sent when READY=1 arrived was not served (curl %d, HTTP %r)"
               % (code, got))
        ready_msg = [kv for t, kv in mgr.msgs if "READY" in kv][0]
        expect("serving https://127.0.0.1:%d" % gw.port in ready_msg.get("STATUS", ""),
               "READY=1 without the listener in STATUS: %r" % ready_msg)

        h.log("-- watchdog_pings_while_loops_run")
        t0 = time.monotonic()
        mgr.pump(1.5)
        pings = mgr.count("WATCHDOG", t0)
        expect(pings >= 4, "%d WATCHDOG=1 in 1.5 s with WATCHDOG_USEC=%d (want >= 4)"
               % (pings, WATCHDOG_USEC))
        expect(mgr.count("READY", 0) == 1, "READY=1 sent %d times" % mgr.count("READY", 0))
        expect(t_ready <= min(t for t, kv in mgr.msgs if "WATCHDOG" in kv) + 0.5,
               "watchdog pings long before READY=1")

        h.log("-- stuck_worker_stops_the_pings")
        # Only a line logged after the stall counts: a loaded machine may
        # have logged a slow turn earlier, and pings rightly resumed then.
        log_at = len(gw.log())
        gw.proc.send_signal(signal.SIGUSR2)
        gw.wait_log(r"watchdog: worker 0's loop has not gone round", timeout=5, start=log_at)
        t_stuck = time.monotonic()
        mgr.pump(2.0)
        late = mgr.count("WATCHDOG", t_stuck + 0.1)
        expect(late == 0, "%d WATCHDOG=1 after worker 0 was reported stuck" % late)
        gw.check_alive("with worker 0 stalled")

        h.log("-- stopping_on_sigterm")
        t_term = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        mgr.wait("STOPPING", 5, after=t_term)
        expect(re.search(r"SIGTERM: draining", gw.log()), "no drain log line after SIGTERM")
        gw.proc.wait(timeout=10)
        expect(gw.proc.returncode == 0, "exit status %s after SIGTERM" % gw.proc.returncode)
        gw.returncode = 0


if __name__ == "__main__":
    h.main(test, deadline_s=60)
