#!/usr/bin/env python3
"""Issue 18: the Debian package builds, passes lintian, and its service runs.

scripts/package builds the .deb (dpkg-buildpackage -b -us -uc in a copy of
the tree, then lintian --fail-on error). It is unpacked with dpkg-deb -x
into a throwaway root (never installed on this machine), and then:

- contents: /usr/sbin/sluice, /usr/bin/sluice-probe and sluice-pub, the man
  pages, /etc/sluice/sluice.ini listed in conffiles, the edge configs, rules
  and dashboard under /usr/share/doc/sluice/, the logrotate entry sending
  SIGUSR1, a postinst that makes the sluice user;
- the unit: `systemd-analyze verify` passes on it (against the unpacked
  root), TimeoutStopSec is above the packaged drain-ms + 5 s, LimitNOFILE
  above max-connections, and `systemd-analyze security --offline` rates it
  2.5 or better (the README reports the figure);
- the service: the unit's ExecStart line, mapped into the root, runs the
  packaged binary with the packaged config against a real nats-server on a
  free port (only the listen/admin ports, certificate, NATS URL, log and
  www paths overridden by flags), as systemd would: NOTIFY_SOCKET and
  WATCHDOG_USEC set. READY=1 arrives, then watchdog pings; a stream gets a
  published event; the packaged demo page is served; logrotate's move +
  SIGUSR1 makes a fresh access log; the unit's ExecReload line reloads the
  certificate; SIGTERM sends STOPPING=1 and the process exits 0.

Slow-ish (the package compiles the gateway): DEB_BUILD_OPTIONS=noopt
keeps it to about a minute; COST in tests/CMakeLists.txt starts it early.
SLUICE_TEST_DEB=path/to/sluice_*.deb skips the build (reruns by hand).
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import harness as h
from harness import expect
import metrics_util as m
from notify_util import Manager

SRC = os.environ.get("SLUICE_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))


def run(cmd, timeout, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       **kw)
    return r.returncode, r.stdout.decode(errors="replace")


def unit_values(path):
    """{Key: [values]} of a unit file (all sections)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith(("#", ";", "[")):
                k, v = line.split("=", 1)
                out.setdefault(k, []).append(v)
    return out


def ini_values(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith((";", "#")):
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def seconds(v):
    mm = re.fullmatch(r"(\d+)(s|min)?", v)
    expect(mm, "unit time %r is not N, Ns or Nmin" % v)
    return int(mm.group(1)) * (60 if mm.group(2) == "min" else 1)


def build(d):
    if os.environ.get("SLUICE_TEST_DEB"):  # a .deb built already (quicker reruns by hand)
        return os.environ["SLUICE_TEST_DEB"]
    # One compiler at a time: the suite runs other e2e tests beside this one.
    env = dict(os.environ, DEB_BUILD_OPTIONS="noopt nocheck parallel=1")
    t0 = time.monotonic()
    rc, out = run([os.path.join(SRC, "scripts", "package"), os.path.join(d, "out")], 280,
                  env=env)
    h.log("scripts/package: %.0f s" % (time.monotonic() - t0))
    expect(rc == 0, "scripts/package failed:\n%s" % h.tail(out, 40))
    debs = [f for f in os.listdir(os.path.join(d, "out")) if re.match(r"sluice_.*\.deb$", f)]
    expect(len(debs) == 1, "expected one sluice_*.deb, got %s" % debs)
    return os.path.join(d, "out", debs[0])


def check_contents(deb, root, ctl):
    for path in ("usr/sbin/sluice", "usr/bin/sluice-probe", "usr/bin/sluice-pub"):
        expect(os.access(os.path.join(root, path), os.X_OK), "/%s is not in the package" % path)
    for path in ("usr/share/man/man8/sluice.8.gz", "usr/share/man/man1/sluice-probe.1.gz",
                 "usr/share/man/man1/sluice-pub.1.gz", "etc/sluice/sluice.ini",
                 "lib/systemd/system/sluice.service", "etc/logrotate.d/sluice",
                 "usr/share/doc/sluice/edge/nginx.conf", "usr/share/doc/sluice/edge/haproxy.cfg",
                 "usr/share/doc/sluice/examples/sluice.ini",
                 "usr/share/doc/sluice/prometheus/sluice-rules.yml",
                 "usr/share/doc/sluice/grafana/sluice.json", "usr/share/sluice/www/index.html"):
        expect(os.path.exists(os.path.join(root, path)), "/%s is not in the package" % path)
    with open(os.path.join(ctl, "conffiles")) as f:
        conffiles = f.read().split()
    expect("/etc/sluice/sluice.ini" in conffiles, "conffiles: %s" % conffiles)
    with open(os.path.join(ctl, "postinst")) as f:
        expect("adduser --system" in f.read(), "postinst makes no system user")
    with open(os.path.join(root, "etc/logrotate.d/sluice")) as f:
        rot = f.read()
    expect("SIGUSR1" in rot and "postrotate" in rot, "logrotate entry sends no SIGUSR1")
    rc, out = run(["dpkg-deb", "-f", deb, "Package", "Depends"], 10)
    expect(rc == 0 and "libsystemd0" in out, "Depends lacks libsystemd0 (sd_notify): %s" % out)


def host_units_into(root):
    """What verify resolves besides the unit: the host's units and /bin/kill (ExecReload)."""
    for d in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for name in os.listdir(d):
            src, dst = os.path.join(d, name), os.path.join(root, d[1:], name)
            if os.path.lexists(dst) or os.path.isdir(src) and not os.path.islink(src):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            else:
                shutil.copyfile(src, dst)
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    shutil.copy("/bin/kill", os.path.join(root, "bin", "kill"))


def check_unit(root, unit, cfg):
    host_units_into(root)
    rc, out = run(["systemd-analyze", "verify", "--root=" + root,
                   os.path.join(root, "lib/systemd/system/sluice.service")], 60,
                  env=dict(os.environ, MANPATH=os.path.join(root, "usr/share/man")))
    expect(rc == 0 and not out.strip(), "systemd-analyze verify:\n%s" % out)
    u = unit_values(unit)
    expect(u.get("Type") == ["notify"], "Type=%s" % u.get("Type"))
    drain_s = int(cfg.get("drain-ms", "30000")) / 1000
    expect(seconds(u["TimeoutStopSec"][0]) > drain_s + 5,
           "TimeoutStopSec=%s is not above drain-ms %s s + 5 s" % (u["TimeoutStopSec"], drain_s))
    expect(int(u["LimitNOFILE"][0]) > int(cfg.get("max-connections", "100000")),
           "LimitNOFILE=%s is not above max-connections" % u["LimitNOFILE"])
    expect(seconds(u["WatchdogSec"][0]) >= 10, "WatchdogSec=%s" % u["WatchdogSec"])
    expect(u.get("AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"], "AmbientCapabilities")
    for k in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        expect(u.get(k) == ["yes"], "%s=%s" % (k, u.get(k)))
    expect(u.get("ProtectSystem") == ["strict"], "ProtectSystem=%s" % u.get("ProtectSystem"))
    rc, out = run(["systemd-analyze", "security", "--offline=true", "--root=" + root,
                   os.path.join(root, "lib/systemd/system/sluice.service")], 60)
    mm = re.search(r"Overall exposure level for sluice\.service: ([\d.]+)", out)
    expect(mm, "systemd-analyze security gave no exposure level:\n%s" % h.tail(out, 10))
    h.log("systemd-analyze security --offline: exposure %s" % mm.group(1))
    expect(float(mm.group(1)) <= 2.5, "exposure %s is above 2.5" % mm.group(1))
    return u


def run_service(root, u, d):
    """The unit's ExecStart, in the root, with the packaged config."""
    argv = shlex.split(u["ExecStart"][0])
    expect(argv[0] == "/usr/sbin/sluice", "ExecStart runs %s" % argv[0])
    argv[0] = root + argv[0]
    argv = [root + a if a.startswith("/etc/") else a for a in argv]
    os.environ["SLUICE_BIN"] = argv[0]
    mgr = Manager(d)
    os.environ["NOTIFY_SOCKET"] = mgr.path
    os.environ["WATCHDOG_USEC"] = "1000000"
    www = os.path.join(root, "usr/share/sluice/www")
    with h.Nats() as nats, h.Gateway(nats.url, extra_args=argv[1:], www=www,
                                     workers=2, drain_ms=1000) as gw:
        t_ready = mgr.wait("READY", 10)
        mgr.pump(1.0)
        expect(mgr.count("WATCHDOG", t_ready) >= 2, "no watchdog pings after READY=1")
        st, body, _ = m.admin_get(gw, "/readyz")
        expect(st == 200, "/readyz: %d %r" % (st, body))
        # A stream gets a published event.
        curl = h.spawn(["curl", "-sN", "--http2", "-m", "10", "--cacert", gw.ca,
                        gw.url("/events/pkg.test")], stdout=subprocess.PIPE)
        nats.wait_subscriptions(["pkg.test"], timeout=10)
        h.publish(nats.url, "pkg.test", "from the package")
        out = b""
        end = time.monotonic() + 10
        while b"from the package" not in out and time.monotonic() < end:
            chunk = os.read(curl.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
        h.kill_proc(curl)
        expect(b"data: from the package" in out, "the stream got %r" % out[-300:])
        rc, page = run(["curl", "-s", "--cacert", gw.ca, gw.url("/")], 10)
        expect(rc == 0 and "<html" in page.lower(), "the packaged demo page is not served")
        # logrotate: move the file, SIGUSR1, and the next line goes to a new file.
        rotated = gw.access_log_path + ".1"
        h.wait_until(lambda: os.path.exists(gw.access_log_path), 10, "the access log")
        os.rename(gw.access_log_path, rotated)
        gw.proc.send_signal(signal.SIGUSR1)
        h.wait_until(lambda: run(["curl", "-s", "-o", "/dev/null", "--cacert", gw.ca,
                                  gw.url("/style.css")], 10)[0] == 0 and
                     os.path.exists(gw.access_log_path), 10,
                     "a new access log after SIGUSR1")
        # ExecReload, with $MAINPID as systemd sets it.
        reload_cmd = u["ExecReload"][0].replace("$MAINPID", str(gw.proc.pid))
        rc, out = run(shlex.split(reload_cmd), 10)
        expect(rc == 0, "ExecReload %r: %s" % (reload_cmd, out))
        gw.wait_log(r"SIGHUP: certificate .* reloaded", timeout=10)
        # systemctl stop: SIGTERM, STOPPING=1, exit 0 within TimeoutStopSec.
        t_term = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        mgr.wait("STOPPING", 5, after=t_term)
        gw.proc.wait(timeout=seconds(u["TimeoutStopSec"][0]))
        expect(gw.proc.returncode == 0, "exit status %s" % gw.proc.returncode)
        gw.returncode = 0


def test():
    d = h.tempdir("sluice-pkg-")
    deb = build(d)
    root, ctl = os.path.join(d, "root"), os.path.join(d, "control")
    for args in (["-x", deb, root], ["-e", deb, ctl]):
        rc, out = run(["dpkg-deb"] + args, 60)
        expect(rc == 0, "dpkg-deb %s: %s" % (args[0], out))
    check_contents(deb, root, ctl)
    cfg = ini_values(os.path.join(root, "etc/sluice/sluice.ini"))
    u = check_unit(root, os.path.join(root, "lib/systemd/system/sluice.service"), cfg)
    run_service(root, u, d)


if __name__ == "__main__":
    h.main(test, deadline_s=290)
