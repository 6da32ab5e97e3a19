#!/usr/bin/env python3
"""Never stuck at exit, never two gateways on one port by accident.

What broke: SIGTERM while NATS was down did not exit (shutdown waited on
JetStream unsubscribes, one timeout each), a second SIGTERM did not exit
either, Ctrl-C on scripts/demo left sluice running and holding its port,
and a second gateway on the same port started silently and took half of
the first one's connections (SO_REUSEPORT).

exit_with_nats_stopped / exit_with_nats_killed: a gateway with
--drain-ms 1000 and open streams on JetStream subjects (nats-server -js,
a stream, --jetstream-streams) and on core subjects; nats-server is
SIGSTOPped (every NATS call hangs) or SIGKILLed; SIGTERM: the gateway is
gone within drain-ms + 5 s. The same with core subjects only.

second_signal_exits_at_once: --drain-ms 30000, 20 open streams, and
streams on JetStream subjects closed after nats-server is SIGSTOPped
(their lingering subscriptions are swept by the main thread, which then
waits on NATS); SIGTERM: /readyz turns 503 all the same; SIGTERM again:
gone within 1 s, with its log line.

port_is_not_shared_by_accident: a second gateway on the first one's TLS
port, then on its plain port, then on its admin port, exits 1 with one
clear line; the first keeps serving. With --reuse-port 1 on both, both
start and the start-up line says the port is shared. Also with one worker
(whose listener then binds without SO_REUSEPORT).

demo_ctrl_c_leaves_nothing: scripts/demo on free ports with this build
(SLUICE_BIN, SLUICE_PUB), in its own session; once it serves and a curl
stream is open on its JetStream subject and one on demo.s199 (the demo
page's last default stream) has received an event, SIGINT to its process group, and
again 0.3 s later (an impatient user): the script ends, no process it
started (by PID) remains, and its ports are free.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import metrics_util as mu  # noqa: E402
from harness import HOST, expect  # noqa: E402

SLACK_S = 5.0  # the exit promise: drain-ms + 5 s


def wait_exit(proc, t0, timeout):
    """Seconds from t0 until proc exited, and its status; fails past timeout."""
    try:
        proc.wait(timeout=max(0.0, t0 + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise h.TestFailure("the gateway is still running %.1f s after SIGTERM" % timeout)
    return time.monotonic() - t0, proc.returncode


def open_streams(gw, paths):
    """One h2 connection with a stream on every path, each past its start item."""
    c = h2.H2Conn(gw)
    ss = c.open_many(paths)
    c.wait(lambda _: all(h.START_RE.match(bytes(s.body)) for s in ss), 15,
           "every stream's start item")
    return c


def exit_while_nats_is_down(how, jetstream):
    node = j.single_node() if jetstream else h.Nats()
    try:
        flags = {"drain_ms": 1000, "heartbeat_ms": 60000, "workers": 2}
        paths = ["/events/core.a", "/events/core.b", "/events/core.c.>"]
        if jetstream:
            j.create_stream([node.port], "EXIT", ["js.>"])
            flags["jetstream_streams"] = "EXIT"
            # Each JetStream subscription's end waits up to a second for an answer that a
            # stopped nats-server never gives: a dozen of them outlast drain-ms + 5 s.
            paths += ["/events/js.%d" % i for i in range(11)] + ["/events/js.x.>"]
        with h.Gateway(node.url, **flags) as gw:
            conn = open_streams(gw, paths)
            if how == "stopped":
                os.kill(node.proc.pid, signal.SIGSTOP)
            else:
                node.kill() if jetstream else node.stop(signal.SIGKILL)
            t0 = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            t, rc = wait_exit(gw.proc, t0, 1.0 + SLACK_S + 3)
            h.log("%s subjects, nats-server %s: exited %s %.2f s after SIGTERM"
                  % ("JetStream and core" if jetstream else "core", how, rc, t))
            expect(t <= 1.0 + SLACK_S, "exit took %.2f s with nats-server %s, over drain-ms "
                   "(1 s) + 5 s" % (t, how))
            expect(rc is not None and rc >= 0, "the gateway died of signal %s" % rc)
            conn.close()
    finally:
        if how == "stopped" and node.proc and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGCONT)
        h.kill_proc(node.proc)


def exit_with_nats_stopped(_):
    exit_while_nats_is_down("stopped", jetstream=True)
    exit_while_nats_is_down("stopped", jetstream=False)


def exit_with_nats_killed(_):
    exit_while_nats_is_down("killed", jetstream=True)


def second_signal_exits_at_once(_):
    node = j.single_node()
    try:
        j.create_stream([node.port], "EXIT2", ["js.>"])
        with h.Gateway(node.url, drain_ms=30000, heartbeat_ms=60000, history_keep_ms=0,
                       jetstream_streams="EXIT2") as gw:
            # 20 streams: the drain ends them spread over the 30 s, so it is still going.
            conn = open_streams(gw, ["/events/ex.second"] * 20)
            # Streams on JetStream subjects, closed once nats-server is stopped: their
            # subscriptions linger, and the main thread's sweep ends them, each end
            # waiting for an answer that never comes: the main thread is stuck.
            js_conn = open_streams(gw, ["/events/js.l%d" % i for i in range(10)])
            mark = len(gw.log())
            os.kill(node.proc.pid, signal.SIGSTOP)
            js_conn.close()
            time.sleep(0.5)
            gw.proc.send_signal(signal.SIGTERM)
            h.wait_until(lambda: mu.admin_get(gw, "/readyz")[0] == 503, 2,
                         "readyz 503 (draining) while the main thread is stuck")
            expect(gw.alive(), "the gateway exited before the 30 s drain window")
            expect(not re.search(r"drained; exiting", gw.log()[mark:]),
                   "the drain is over already: this case wants a signal during the drain")
            t1 = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            t, rc = wait_exit(gw.proc, t1, 3)
            h.log("second SIGTERM during a 30 s drain, main thread in a NATS call: exited %s "
                  "after %.2f s" % (rc, t))
            expect(t < 1.0, "the second SIGTERM took %.2f s to exit" % t)
            expect(rc == 0, "status %s after the second signal" % rc)
            expect(re.search(r"SIGTERM again: exiting without waiting", gw.log()[mark:]),
                   "no log line for the second signal")
            conn.close()
    finally:
        if node.proc and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGCONT)
        h.kill_proc(node.proc)


def listen_flag_of(port):
    return "%s:%d" % (HOST, port)


def start_second(first, args):
    """A second gateway with first's command line plus args; (status or None, stderr)."""
    logpath = os.path.join(h.tempdir("sluice-second-"), "stderr")
    with open(logpath, "wb") as lf:
        p = h.spawn(first.cmd + list(args), stdout=subprocess.DEVNULL, stderr=lf)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and p.poll() is None:
            with open(logpath) as f:
                if "listening on" in f.read():
                    break
            time.sleep(0.05)
        with open(logpath) as f:
            text = f.read()
        return p.poll(), text, p
    except BaseException:
        h.kill_proc(p)
        raise


def still_serves(gw, subject):
    c = open_streams(gw, ["/events/" + subject])
    c.close()


def refused(first, args, what):
    rc, text, p = start_second(first, args)
    h.kill_proc(p)
    errors = [ln for ln in text.splitlines() if " error " in ln]
    h.log("second gateway on the same %s: status %s, %r" % (what, rc, errors))
    expect(rc == 1, "a second gateway on the same %s: status %s, expected 1:\n%s"
           % (what, rc, h.tail(text, 5)))
    expect(len(errors) == 1 and
           re.search(r"Address already in use by another (sluice|process)", errors[0])
           and "--reuse-port 1" in errors[0],
           "not one clear error line for the %s in use:\n%s" % (what, h.tail(text, 5)))


def port_is_not_shared_by_accident(nats):
    for workers in (2, 1):
        with h.Gateway(nats.url, workers=workers, listen_plain=listen_flag_of(0)) as gw:
            plain = gw.plain_port
            refused(gw, ["--listen", listen_flag_of(gw.port), "--listen-plain",
                         listen_flag_of(0)], "TLS port (%d workers)" % workers)
            refused(gw, ["--listen-plain", listen_flag_of(plain)],
                    "plain port (%d workers)" % workers)
            still_serves(gw, "ex.first")
            # The admin listener never shares: its readiness is this process's.
            rc, text, p = start_second(gw, ["--admin", listen_flag_of(gw.admin_port),
                                            "--listen-plain", "off"])
            h.kill_proc(p)
            expect(rc == 1 and re.search(r"admin: .*Address already in use", text),
                   "a second gateway on the same admin port: status %s:\n%s"
                   % (rc, h.tail(text, 5)))
            still_serves(gw, "ex.first2")
            expect(gw.alive(), "the first gateway died: %s" % gw.state())

    # Sharing on purpose: both say --reuse-port 1.
    with h.Gateway(nats.url, workers=2, reuse_port=1) as gw:
        expect(re.search(r"port shared with other gateways", gw.log()),
               "the start-up line does not say the port is shared")
        rc, text, p = start_second(gw, ["--listen", listen_flag_of(gw.port), "--admin",
                                        listen_flag_of(0)])
        try:
            expect(rc is None and "listening on https://%s" % listen_flag_of(gw.port) in text
                   and "port shared with other gateways" in text,
                   "with --reuse-port 1 on both, the second did not start: status %s:\n%s"
                   % (rc, h.tail(text, 5)))
            still_serves(gw, "ex.shared")
        finally:
            h.kill_proc(p)
        # One that shares may not join one that does not.
        with h.Gateway(nats.url, workers=2) as excl:
            refused(excl, ["--listen", listen_flag_of(excl.port), "--reuse-port", "1"],
                    "TLS port, joining one that does not share it")


def pids_in_group(pgid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            with open("/proc/%s/comm" % d) as f:
                out.append((int(d), f.read().strip()))
    return out


def port_free(port):
    s = socket.socket()
    # As a restarted server binds: connections in TIME_WAIT do not count, a listener does.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def demo_ctrl_c_leaves_nothing(_):
    demo = os.path.join(h.SRC, "scripts", "demo")
    for tool in ("nats-server", "openssl"):
        if not h.shutil.which(tool):
            h.log("SKIP demo_ctrl_c_leaves_nothing: %s is not installed" % tool)
            return
    if not os.access(os.path.join(h.SRC, "certs", "dev", "server.pem"), os.R_OK) and \
            not os.access(os.path.join(h.SRC, "certs"), os.W_OK):
        h.log("SKIP demo_ctrl_c_leaves_nothing: certs/dev cannot be made in the source tree")
        return
    ports = {"PORT": h.free_port(), "PLAIN_PORT": h.free_port(), "NATS_PORT": h.free_port()}
    env = dict(os.environ, DEMO_DIR=h.tempdir("sluice-demo-"),
               SLUICE_BIN=h.tool("SLUICE_BIN", "sluice"), SLUICE_PUB=h.tool("SLUICE_PUB",
                                                                           "sluice-pub"),
               SLUICE_LLM=h.tool("SLUICE_LLM", "sluice-llm"),
               **{k: str(v) for k, v in ports.items()})
    out = os.path.join(env["DEMO_DIR"], "demo.out")
    with open(out, "wb") as f:
        # Its own session, as a terminal's job: Ctrl-C signals its whole process group.
        p = h.spawn(["bash", demo], stdout=f, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)
    group = []
    try:
        def text():
            with open(out) as f:
                return f.read()
        h.wait_until(lambda: "sluice is running" in text() or p.poll() is not None, 60,
                     "scripts/demo to serve")
        expect(p.poll() is None, "scripts/demo exited %s before serving:\n%s"
               % (p.returncode, h.tail(text(), 15)))
        # The demo says so right after it starts its last children in the background:
        # a loaded machine may not have exec'd them yet (they show as "bash").
        def children():
            g = pids_in_group(p.pid)
            names = {n for _, n in g}
            return g if {"sluice", "nats-server", "sluice-llm"} <= names else None
        try:
            group = h.wait_until(children, 20, "sluice, nats-server and sluice-llm in the "
                                 "demo's process group", interval=0.1)
        except h.TestFailure:
            raise h.TestFailure("the demo's process group has no sluice, nats-server or "
                                "sluice-llm: %r" % sorted(n for _, n in pids_in_group(p.pid)))
        h.log("scripts/demo (pid %d) serves; its processes: %s" % (p.pid, group))
        expect(all(not port_free(port) for port in ports.values()),
               "the demo does not hold all its ports")
        # A stream on the demo's JetStream subject: its subscription has to be ended
        # at shutdown, which waits on a nats-server that Ctrl-C stops at the same time.
        curl = h.spawn(["curl", "-sN", "--http2", "--noproxy", "*", "--cacert",
                        os.path.join(h.SRC, "certs", "dev", "ca.pem"), "--max-time", "30",
                        "https://localhost:%d/events/demo.ticks" % ports["PORT"]],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        h.wait_until(lambda: select.select([curl.stdout], [], [], 0.1)[0] and
                     curl.stdout.read1(4096), 10, "the demo's first bytes on a stream")
        # The page's default streams (one each: demo.s0 … demo.s199) once got
        # nothing: the demo published on demo.ticks only (issue 18).
        last = h.spawn(["curl", "-sN", "--http2", "--noproxy", "*", "--cacert",
                        os.path.join(h.SRC, "certs", "dev", "ca.pem"), "--max-time", "30",
                        "https://localhost:%d/events/demo.s199" % ports["PORT"]],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        got = [b""]

        def data_on_last():
            if select.select([last.stdout], [], [], 0.1)[0]:
                got[0] += last.stdout.read1(4096)
            return b"\ndata: " in got[0]
        h.wait_until(data_on_last, 15, "an event on demo.s199, the page's last default stream")
        h.kill_proc(last)
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        # An impatient user presses Ctrl-C again while the demo stops.
        time.sleep(0.3)
        try:
            os.killpg(p.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=25)
        except subprocess.TimeoutExpired:
            raise h.TestFailure("scripts/demo still runs 25 s after Ctrl-C:\n%s"
                                % h.tail(text(), 10))
        h.log("scripts/demo ended %.2f s after SIGINT to its group (status %s)"
              % (time.monotonic() - t0, p.returncode))
        left = [(pid, n) for pid, n in group if os.path.exists("/proc/%d" % pid) and
                pid in dict(pids_in_group(p.pid))]
        expect(not left, "left running after Ctrl-C on scripts/demo: %r\n%s"
               % (left, h.tail(text(), 10)))
        busy = [k for k, port in ports.items() if not port_free(port)]
        expect(not busy, "ports still held after Ctrl-C on scripts/demo: %r" % busy)
        expect("demo stopped" in text(), "the demo's cleanup did not run:\n%s"
               % h.tail(text(), 10))
    finally:
        if "curl" in locals():
            h.kill_proc(curl)
        for pid, _ in pids_in_group(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        h.kill_proc(p)


def test():
    with h.Nats() as nats:
        failures = []
        for case in (exit_with_nats_stopped, exit_with_nats_killed, second_signal_exits_at_once,
                     port_is_not_shared_by_accident, demo_ctrl_c_leaves_nothing):
            h.log("== %s" % case.__name__)
            try:
                case(nats)
            except h.TestFailure as e:
                failures.append("%s: %s" % (case.__name__, e))
                h.log("FAILED %s: %s" % (case.__name__, e))
        expect(not failures, "\n".join(failures))


if __name__ == "__main__":
    h.main(test, deadline_s=240)
