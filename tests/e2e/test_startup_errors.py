#!/usr/bin/env python3
"""Issue 2, command line: start-up errors give one clear stderr line and a non-zero exit.

Bad flags, an unreadable or malformed certificate, a config file error
(reported as FILE:LINE:), and no NATS at start. --help and --version exit 0.
"""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402


def run(args, timeout=15):
    """Runs the gateway to its exit; returns (exit code, stderr lines, stdout, seconds)."""
    t = time.monotonic()
    p = h.spawn([h.tool("SLUICE_BIN", "sluice")] + args, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise h.TestFailure("sluice %s still running after %d s" % (" ".join(args), timeout))
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return p.returncode, lines, out.decode("utf-8", "replace"), time.monotonic() - t


def expect_error(args, must_contain, what, timeout=15):
    rc, lines, _, secs = run(args, timeout)
    h.log("%s: exit %d in %.1f s: %r" % (what, rc, secs, lines))
    expect(rc != 0, "%s: exit code 0, expected non-zero" % what)
    expect(rc > 0, "%s: killed by signal %d instead of exiting" % (what, -rc))
    expect(len(lines) == 1, "%s: expected one stderr line, got %d: %r" % (what, len(lines), lines))
    for s in must_contain:
        expect(s.lower() in lines[0].lower(), "%s: %r does not mention %r" % (what, lines[0], s))
    return lines[0], secs


def test():
    d = h.tempdir()
    ca, cert, key = h.make_certs(d)
    with h.Nats() as nats:
        base = ["--listen", "127.0.0.1:0", "--nats", nats.url]
        tls = ["--cert", cert, "--key", key]

        rc, _, out, _ = run(["--help"])
        expect(rc == 0 and "--heartbeat-ms" in out, "--help: exit %d, output %r" % (rc, out[:200]))
        rc, _, out, _ = run(["--version"])
        expect(rc == 0 and out.startswith("sluice "), "--version: exit %d, output %r" % (rc, out))

        expect_error(base + tls + ["--bogus", "1"], ["bogus"], "unknown flag")
        expect_error(base + tls + ["--workers", "lots"], ["workers"], "non-numeric --workers")
        expect_error(base + tls + ["--heartbeat-ms"], ["heartbeat-ms"], "flag without a value")
        expect_error(base + tls + ["--log-level", "loud"], ["log-level"], "bad --log-level")

        missing = os.path.join(d, "no-such-cert.pem")
        expect_error(base + ["--cert", missing, "--key", key], [missing], "missing cert")
        junk = os.path.join(d, "junk.pem")
        with open(junk, "w") as f:
            f.write("this is not a certificate\n")
        expect_error(base + ["--cert", junk, "--key", key], ["junk.pem"], "malformed cert")
        expect_error(base + ["--cert", cert, "--key", junk], ["junk.pem"], "malformed key")

        ini = os.path.join(d, "bad.ini")
        with open(ini, "w") as f:
            f.write("listen = 127.0.0.1:0\nno-such-key = 1\n")
        expect_error(["--config", ini] + tls, [ini + ":2:", "no-such-key"], "unknown config key")
        ini3 = os.path.join(d, "bad3.ini")
        with open(ini3, "w") as f:
            f.write("# comment\nlisten = 127.0.0.1:0\nworkers = lots\n")
        expect_error(["--config", ini3] + tls, [ini3 + ":3:", "workers"], "bad config value")
        expect_error(["--config", os.path.join(d, "absent.ini")] + tls, ["absent.ini"],
                     "missing config file")

        # The config file works when it is right (and flags still override it).
        good = os.path.join(d, "good.ini")
        with open(good, "w") as f:
            f.write("[sluice]\nlisten = 127.0.0.1:1\nnats = %s\nheartbeat-ms = 700\n" % nats.url)
        with h.Gateway(nats.url, extra_args=["--config", good]) as gw:
            expect("heartbeat 700 ms" in gw.log(), "config value not applied: %r" % gw.log())
            gw.stop()

    # Nothing listens on this port: the gateway must give up quickly and clearly.
    port = h.free_port()
    url = "nats://127.0.0.1:%d" % port
    line, secs = expect_error(["--listen", "127.0.0.1:0", "--nats", url] + tls, ["nats"],
                              "no NATS at start", timeout=20)
    expect(secs <= 10, "no NATS at start: took %.1f s to exit, expected <= 10" % secs)
    expect(str(port) in line, "no NATS at start: %r does not name the URL" % line)


if __name__ == "__main__":
    h.main(test)
