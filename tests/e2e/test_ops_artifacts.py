#!/usr/bin/env python3
"""Issue 18: the alert rules and the dashboard query metrics the gateway has.

A real gateway (and nats-server) is scraped once; its metric families are
the truth the operator artifacts are checked against:

- conf/prometheus/sluice-rules.yml: every sluice_* metric an expression
  uses is a family on /metrics (histograms by their _bucket, _sum and
  _count); every sluice:* recording rule an alert uses is defined; every
  alert has a runbook_url whose anchor is a heading of the README.
- conf/grafana/sluice.json: valid JSON, panels each with at least one
  query, every sluice_* metric a query uses is a family on /metrics.

Readiness, which SluiceReadinessFlapping watches: sluice_ready is 1 and
sluice_readiness_changes_total 1 once started; nats-server stopped, they
turn 0 and 2 (and /readyz says 503), the flips counted by the signal
thread's 100 ms check, not by scrapes.

The gateway exposes every family from its start (counters at 0, one
histogram series with zero counts), so no event has to happen first.
`promtool test rules` (the rules' behaviour on synthetic series) is a test
of its own: rules_promtool in tests/CMakeLists.txt.
"""

import json
import os
import re

import harness as h
from harness import expect
import metrics_util as m

SRC = os.environ.get("SLUICE_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
METRIC_RE = re.compile(r"\bsluice_[a-z0-9_]+")
RECORD_RE = re.compile(r"\bsluice:[a-z0-9_:]+")


def family(name, families):
    for suffix in ("", "_bucket", "_sum", "_count"):
        if suffix and name.endswith(suffix) and name[:-len(suffix)] in families:
            return name[:-len(suffix)]
        if not suffix and name in families:
            return name
    return None


def readme_anchors():
    """GitHub's anchors for the README's headings."""
    with open(os.path.join(SRC, "README.md")) as f:
        text = f.read()
    out = set()
    for line in text.splitlines():
        mm = re.match(r"#+ (.*)", line)
        if mm:
            slug = re.sub(r"[^\w\- ]", "", mm.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def check_rules(families):
    path = os.path.join(SRC, "conf", "prometheus", "sluice-rules.yml")
    with open(path) as f:
        text = f.read()
    code = "\n".join(l.split("#", 1)[0] if l.lstrip().startswith("#") else l
                     for l in text.splitlines())
    used = set(METRIC_RE.findall(code))
    expect(len(used) >= 8, "only %d sluice_* metrics found in %s" % (len(used), path))
    missing = sorted(n for n in used if family(n, families) is None)
    expect(not missing, "%s uses metrics the gateway does not expose: %s" % (path, missing))
    recorded = set(re.findall(r"^\s*- record: (\S+)", code, re.M))
    for name in set(RECORD_RE.findall(code)):
        expect(name in recorded, "%s uses recording rule %s, which it does not define"
               % (path, name))
    alerts = re.findall(r"^\s*- alert: (\S+)", code, re.M)
    runbooks = re.findall(r"runbook_url: README\.md#(\S+)", code)
    expect(len(alerts) >= 8 and len(runbooks) == len(alerts),
           "%d alerts, %d runbook_url lines" % (len(alerts), len(runbooks)))
    anchors = readme_anchors()
    bad = [r for r in runbooks if r not in anchors]
    expect(not bad, "runbook anchors with no README heading: %s" % bad)
    h.log("rules: %d metrics, %d alerts, every runbook anchor found" % (len(used), len(alerts)))


def check_dashboard(families):
    path = os.path.join(SRC, "conf", "grafana", "sluice.json")
    with open(path) as f:
        dash = json.load(f)  # raises on invalid JSON
    panels = dash.get("panels")
    expect(isinstance(panels, list) and len(panels) >= 8, "dashboard has no panels list")
    used = set()
    for p in panels:
        exprs = [t.get("expr", "") for t in p.get("targets", [])]
        expect(exprs and all(exprs), "panel %r has no query" % p.get("title"))
        for e in exprs:
            used |= set(METRIC_RE.findall(e))
    for v in dash.get("templating", {}).get("list", []):
        used |= set(METRIC_RE.findall(str(v.get("query", ""))))
    missing = sorted(n for n in used if family(n, families) is None)
    expect(not missing, "%s queries metrics the gateway does not expose: %s" % (path, missing))
    h.log("dashboard: %d panels, %d metrics" % (len(panels), len(used)))


def test():
    with h.Nats() as nats, h.Gateway(nats.url, workers=2) as gw:
        families = m.wait_metric(gw, "sluice_ready", 1)
        check_rules(families)
        check_dashboard(families)
        expect(m.value(families, "sluice_readiness_changes_total") == 1,
               "sluice_readiness_changes_total %r after start, expected 1"
               % m.value(families, "sluice_readiness_changes_total"))
        nats.stop()
        m.wait_metric(gw, "sluice_ready", 0)
        st, body, _ = m.admin_get(gw, "/readyz")
        expect(st == 503, "/readyz with NATS stopped: %d %r" % (st, body))
        changes = m.metric(gw, "sluice_readiness_changes_total")
        expect(changes == 2, "sluice_readiness_changes_total %r after NATS stopped, expected 2"
               % changes)
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=60)
