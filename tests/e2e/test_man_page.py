#!/usr/bin/env python3
"""Issue 18: man sluice covers every flag, config key, signal, endpoint and exit status.

The pages are built from the programs' --help and the README by
scripts/gen-man.py (the CMake target `man`, part of the default build);
unit_config checks that every key of config.c's table is in --help. Here:

- every option sluice --help prints is in sluice.8, and every option
  sluice-probe --help prints is in sluice-probe.1;
- every config key (an option other than --config, --help, --version) is
  in the man page's key list and in the README (as `--key`);
- the page has the sections SIGNALS (SIGTERM, SIGINT, SIGHUP, SIGUSR1),
  ENDPOINTS (/events, /publish, /poll, /metrics, /readyz, /healthz),
  METRICS and EXIT STATUS (0, 1, 2);
- groff renders each page with no warning (-ww), when groff is installed.
"""

import os
import re
import shutil
import subprocess

import harness as h
from harness import expect

SRC = os.environ.get("SLUICE_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))


def flags_of(prog):
    r = subprocess.run([prog, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    flags = []
    for line in r.stdout.decode().splitlines():
        if re.match(r"  -", line):
            for f in re.findall(r"--[a-z0-9][a-z0-9.-]*", line.split("  ")[1] if
                                line.startswith("  --") else line):
                if f not in flags:
                    flags.append(f)
    expect(flags, "%s --help lists no options" % prog)
    return flags


def page_text(path):
    """The page's roff source with escapes undone, and groff's warnings (if groff is here)."""
    expect(os.path.exists(path), "%s is missing: the build makes it (target man)" % path)
    with open(path) as f:
        roff = f.read()
    text = re.sub(r"\\f[BIRP]", "", roff).replace("\\-", "-").replace("\\e", "\\")
    warnings = ""
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        warnings = r.stderr.decode()
    else:
        h.log("groff not installed: the pages' rendering is not checked")
    return text, warnings


def sections(text):
    return dict((m.group(1), m.start()) for m in re.finditer(r"^\.SH (.+)$", text, re.M))


def test():
    bindir = os.path.dirname(h.tool("SLUICE_BIN", "sluice"))
    flags = flags_of(h.tool("SLUICE_BIN", "sluice"))
    text, warnings = page_text(os.path.join(bindir, "sluice.8"))
    expect(not warnings, "groff warns about sluice.8:\n%s" % warnings[:2000])
    missing = [f for f in flags if f not in text]
    expect(not missing, "options in --help but not in sluice.8: %s" % missing)
    keys = [f[2:] for f in flags if f not in ("--config", "--help", "--version")]
    sec = sections(text)
    for name in ("OPTIONS", "CONFIGURATION FILE", "SIGNALS", "ENDPOINTS", "METRICS",
                 "EXIT STATUS", "FILES"):
        expect(name in sec, "sluice.8 has no %s section" % name)
    order = sorted(sec.values())

    def body(name):
        start = sec[name]
        ends = [o for o in order if o > start]
        return text[start:ends[0] if ends else len(text)]

    keylist = body("CONFIGURATION FILE")
    missing = [k for k in keys if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(k),
                                                keylist)]
    expect(not missing, "config keys missing from sluice.8's key list: %s" % missing)
    with open(os.path.join(SRC, "README.md")) as f:
        readme = f.read()
    missing = [k for k in keys if "`--%s" % k not in readme]
    expect(not missing, "config keys (from --help) the README does not document: %s" % missing)
    for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
        expect(sig in body("SIGNALS"), "SIGNALS does not mention %s" % sig)
    for path in ("/events", "/publish", "/poll", "/metrics", "/readyz", "/healthz"):
        expect(path in body("ENDPOINTS"), "ENDPOINTS does not mention %s" % path)
    for code in ("0", "1", "2"):
        expect(re.search(r"^\.TP\n%s\b" % code, body("EXIT STATUS"), re.M),
               "EXIT STATUS has no entry for %s" % code)
    expect("sluice_streams_open" in body("METRICS"), "METRICS lists no sluice_streams_open")
    h.log("sluice.8: %d options, %d keys, all sections" % (len(flags), len(keys)))

    probe = h.tool("SLUICE_PROBE", "sluice-probe")
    pflags = flags_of(probe)
    ptext, pwarn = page_text(os.path.join(bindir, "sluice-probe.1"))
    expect(not pwarn, "groff warns about sluice-probe.1:\n%s" % pwarn[:2000])
    missing = [f for f in pflags if f not in ptext]
    expect(not missing, "options in sluice-probe --help but not in sluice-probe.1: %s" % missing)
    _, pubwarn = page_text(os.path.join(bindir, "sluice-pub.1"))
    expect(not pubwarn, "groff warns about sluice-pub.1:\n%s" % pubwarn[:2000])


if __name__ == "__main__":
    h.main(test, deadline_s=60)
