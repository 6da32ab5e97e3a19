"""The Durable Streams conformance suite against sluice's protocol route.

A real nats-server with JetStream and the real gateway with --ds-base-path
/v1/stream/ (the path the suite uses). npm's @durable-streams/server-
conformance-tests (the version tests/ds/package-lock.json pins: 332 cases
and 6 opt-in ones) runs under vitest (tests/ds/conformance.test.mjs) twice:
over TLS with h2 (npm's undici with allowH2; the ALPN protocol of every
connection is recorded, and every one must be h2) and over the cleartext
HTTP/1.1 listener (node's own fetch). Each run's results are printed as
passed/failed/skipped by area (the suite's top-level describe blocks).

The test fails when any case fails, or when the suite's size is not what
this test was written against (the 6 opt-in subscription cases are skipped
by the suite itself).

The gateway runs as the conformance setup in the README says: a nats-server
whose max_payload (16 MB) takes the suite's 10 MiB append, ds-max-body-bytes
and conn-queue-bytes to match, cors-origins https://example.com (the
suite's preflight origin) and ds-long-poll-ms 3000 (the suite waits 5 s for
a long poll's timeout).

tests/ds/setup.sh installs node and the npm packages when missing; if they
cannot be had the test fails with the reason (a skip would hide a broken
path).
"""

import collections
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import js_util  # noqa: E402
from harness import expect  # noqa: E402

DS_DIR = os.path.join(h.SRC, "tests", "ds")
SUITE_CASES = 338  # 332 + 6 opt-in (skipped) in 0.3.6


def setup():
    r = subprocess.run(["sh", os.path.join(DS_DIR, "setup.sh")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=280)
    h.log(r.stdout.decode(errors="replace").strip())
    node = shutil.which("node")
    expect(node, "node is not installed (scripts/deps.sh --node)")
    for p in ("@durable-streams/server-conformance-tests", "undici", "vitest"):
        expect(os.path.isdir(os.path.join(DS_DIR, "node_modules", p)),
               "npm package %s is not installed in tests/ds (npm ci failed)" % p)
    return node


class BigPayloadNode(js_util.JsNode):
    """JetStream with max_payload 16 MB: the suite appends 10 MiB at once."""

    def command(self):
        conf = os.path.join(self.dir, "payload.conf")
        with open(conf, "w") as f:
            f.write("max_payload: 16MB\n")
        return super().command() + ["-c", conf]


def area(t):
    titles = t["ancestorTitles"] or ["-"]
    if titles[0] in ("Stream Closure", "Property-Based Tests (fast-check)") and len(titles) > 1:
        return titles[0] + " > " + titles[1]
    return titles[0]


def run_suite(node, base, gw, label):
    d = h.tempdir("sluice-ds-")
    out = os.path.join(d, "results.json")
    alpn_file = os.path.join(d, "alpn.json")
    env = dict(os.environ, DS_BASE_URL=base, SLUICE_CA=gw.ca, DS_ALPN_FILE=alpn_file,
               NODE_EXTRA_CA_CERTS=gw.ca, CI="1")
    env.pop("http_proxy", None)
    env.pop("https_proxy", None)
    vitest = os.path.join(DS_DIR, "node_modules", "vitest", "vitest.mjs")
    # Each case may take 20 s, not vitest's 5: under scripts/with-load two cases that walk a
    # stream in many requests (chunk-size pagination, a fast-check operation sequence)
    # once timed out, answering correctly but slowly; the suite judges answers, not speed.
    p = h.spawn([node, vitest, "run", "conformance.test.mjs", "--root", DS_DIR, "--no-coverage",
                 "--testTimeout=20000", "--reporter=json", "--outputFile=" + out], cwd=DS_DIR,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        text, _ = p.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise h.TestFailure("%s: the conformance suite did not finish within 200 s" % label)
    expect(os.path.exists(out), "%s: vitest wrote no results (exit %d): %s"
           % (label, p.returncode, text.decode(errors="replace")[-2000:]))
    with open(out) as f:
        res = json.load(f)
    areas = collections.OrderedDict()
    failed = []
    for fr in res["testResults"]:
        for t in fr["assertionResults"]:
            a = area(t)
            c = areas.setdefault(a, collections.Counter())
            st = t["status"]
            c["passed" if st == "passed" else "failed" if st == "failed" else "skipped"] += 1
            if st == "failed":
                msg = (t.get("failureMessages") or [""])[0].split("\n")[0][:160]
                failed.append((a, t["title"], msg))
    total = collections.Counter()
    h.log("%s: %-58s %6s %6s %7s" % (label, "area", "passed", "failed", "skipped"))
    for a, c in areas.items():
        total.update(c)
        h.log("%s: %-58s %6d %6d %7d" % (label, a, c["passed"], c["failed"], c["skipped"]))
    h.log("%s: %-58s %6d %6d %7d" % (label, "total", total["passed"], total["failed"],
                                      total["skipped"]))
    alpn = {}
    if os.path.exists(alpn_file):
        with open(alpn_file) as f:
            alpn = json.load(f)
    return total, failed, alpn


def test():
    node = setup()
    n = BigPayloadNode()
    n.start()
    try:
        with h.Gateway(n.url, extra_args=[
                "--listen-plain", h.HOST + ":0",
                "--ds-base-path", "/v1/stream/", "--ds-max-body-bytes", str(16 << 20),
                "--conn-queue-bytes", str(64 << 20), "--ds-long-poll-ms", "3000",
                "--cors-origins", "https://example.com"]) as gw:
            bad = []
            for label, base in (("h2", "https://%s:%d" % (h.HOST, gw.port)),
                                ("http/1.1", "http://%s:%d" % (h.HOST, gw.plain_port))):
                total, failed, alpn = run_suite(node, base, gw, label)
                expect(sum(total.values()) == SUITE_CASES,
                       "%s: %d cases, want %d (another suite version?)"
                       % (label, sum(total.values()), SUITE_CASES))
                if label == "h2":
                    expect(alpn and set(alpn) == {"h2"},
                           "h2: the suite's connections negotiated %r, want only h2" % alpn)
                    h.log("h2: %d connections, all h2" % alpn["h2"])
                for f in failed:
                    h.log("%s: FAILED %s > %s: %s" % ((label,) + f))
                bad += [(label,) + f for f in failed]
            expect(not bad, "%d conformance cases failed (listed above)" % len(bad))
            gw.check_alive()
            gw.stop()
    finally:
        n.kill()


if __name__ == "__main__":
    h.main(test, deadline_s=290)
