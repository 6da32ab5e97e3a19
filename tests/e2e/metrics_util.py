"""The one /metrics scraper of the e2e tests, and the admin listener's client.

Standard library only, like harness.py.

- admin_get(): one request to the admin listener (plain HTTP/1.1).
- scrape(): GET /metrics, checked by parse_prometheus(), a strict parser of
  the Prometheus text format that fails the test on any line it cannot
  read, on a family whose samples are not contiguous, on a repeated series,
  and on a malformed histogram. Every test reads /metrics through it, so
  every scrape in the suite also checks the exposition format.
- value()/labelled(): one sample, or a family by one label, of a scrape.
- metric()/limit_hits(): the same in one call, for tests that read one
  number at a time.
"""

import http.client
import math
import re

import harness as h
from harness import HOST, TestFailure, expect


# ---------------------------------------------------------------------------
# admin listener


def admin_get(gw, path, timeout=5, method="GET"):
    """One request to the admin listener; returns (status, body text, headers dict)."""
    expect(gw.admin_port, "the gateway printed no 'admin on http://127.0.0.1:PORT' line")
    conn = http.client.HTTPConnection(HOST, gw.admin_port, timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        return r.status, body, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def scrape(gw, timeout=5):
    """GET /metrics, parsed and validated (see parse_prometheus)."""
    st, body, hdrs = admin_get(gw, "/metrics", timeout)
    expect(st == 200, "/metrics answered %d: %r" % (st, body[:200]))
    expect(hdrs.get("content-type", "").startswith("text/plain"),
           "/metrics content-type is %r, expected text/plain; version=0.0.4"
           % hdrs.get("content-type"))
    return parse_prometheus(body)


# ---------------------------------------------------------------------------
# Prometheus text format (exposition format 0.0.4)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_NAME_RE = re.compile(_NAME + r"\Z")
_SAMPLE_RE = re.compile(r"(" + _NAME + r")(?:\{(.*)\})? ([^ ]+)(?: (-?\d+))?\Z")
_LABEL_PAIR_RE = re.compile(r"(" + _LABEL + r')="((?:[^"\\\n]|\\[\\"n])*)"')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _parse_value(text, where):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    expect(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text),
           "%s: value %r is not a float" % (where, text))
    return float(text)


def _parse_labels(text, where):
    labels = {}
    pos = 0
    while pos < len(text):
        m = _LABEL_PAIR_RE.match(text, pos)
        expect(m, "%s: cannot parse labels at %r" % (where, text[pos:]))
        name, value = m.group(1), m.group(2)
        expect(not name.startswith("__"), "%s: reserved label name %r" % (where, name))
        expect(name not in labels, "%s: label %r repeated" % (where, name))
        labels[name] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                              value)
        pos = m.end()
        if pos < len(text):
            expect(text[pos] == ",", "%s: expected ',' between labels in %r" % (where, text))
            pos += 1
    return labels


def _family_of(sample_name, families):
    """The family a sample belongs to: itself, or a histogram/summary it suffixes."""
    if sample_name in families:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix):
            base = sample_name[:-len(suffix)]
            if base in families and families[base]["type"] in ("histogram", "summary"):
                return base
    return None


def parse_prometheus(text):
    """Parses and validates a /metrics body; fails the test on any defect.

    Checks: every line is a HELP, a TYPE, a comment, blank, or a sample;
    metric and label names and values are well formed; HELP and TYPE appear
    at most once per family and before its samples; a family's samples are
    contiguous; no series is repeated; counters are non-negative and named
    _total; every histogram series has ascending le buckets, cumulative
    counts, a last +Inf bucket equal to _count, and a _sum.

    Returns {family: {"type", "help", "samples": [(name, labels, value)]}}.
    """
    expect(text.endswith("\n"), "/metrics does not end with a newline")
    families = {}
    seen_series = set()
    closed = set()  # families whose sample group has ended
    current = None
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        where = "/metrics line %d %r" % (lineno, line[:120])
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                expect(_NAME_RE.match(name), "%s: bad metric name" % where)
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                expect(not fam["samples"], "%s: %s after the family's samples"
                       % (where, parts[1]))
                if parts[1] == "HELP":
                    expect(fam["help"] is None, "%s: second HELP" % where)
                    expect(len(parts) == 4 and parts[3].strip(), "%s: empty HELP" % where)
                    fam["help"] = parts[3]
                else:
                    expect(fam["type"] is None, "%s: second TYPE" % where)
                    expect(len(parts) == 4 and parts[3] in _TYPES, "%s: bad TYPE" % where)
                    fam["type"] = parts[3]
                if current is not None and current != name:
                    closed.add(current)
                current = name
            continue
        m = _SAMPLE_RE.match(line)
        expect(m, "%s: not a sample line" % where)
        sname, ltext, vtext = m.group(1), m.group(2) or "", m.group(3)
        labels = _parse_labels(ltext, where)
        value = _parse_value(vtext, where)
        fname = _family_of(sname, families)
        expect(fname is not None and families[fname]["type"],
               "%s: sample without a preceding TYPE" % where)
        expect(fname not in closed, "%s: family %s's samples are not contiguous"
               % (where, fname))
        if current is not None and current != fname:
            closed.add(current)
        current = fname
        key = (sname, tuple(sorted(labels.items())))
        expect(key not in seen_series, "%s: series repeated" % where)
        seen_series.add(key)
        fam = families[fname]
        if fam["type"] == "counter":
            expect(sname.endswith("_total"), "%s: counter not named *_total" % where)
            expect(value >= 0 and not math.isnan(value), "%s: negative counter" % where)
        fam["samples"].append((sname, labels, value))
    for name, fam in families.items():
        expect(fam["type"] is not None, "family %s has HELP but no TYPE" % name)
        expect(fam["help"] is not None, "family %s has no HELP" % name)
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name, samples):
    series = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            expect("le" in labels, "%s_bucket without le" % name)
            le = _parse_value(labels["le"], "%s le" % name)
            s["buckets"].append((le, value))
        elif sname == name + "_sum":
            s["sum"] = value
        elif sname == name + "_count":
            s["count"] = value
        else:
            raise TestFailure("histogram %s has a sample %s" % (name, sname))
    expect(series, "histogram %s has no samples" % name)
    for rest, s in series.items():
        b = s["buckets"]
        expect(b, "histogram %s%s has no buckets" % (name, rest))
        les = [le for le, _ in b]
        expect(les == sorted(les) and len(set(les)) == len(les),
               "histogram %s: le bounds not strictly ascending: %r" % (name, les))
        expect(les[-1] == math.inf, "histogram %s: last bucket is le=%r, not +Inf"
               % (name, les[-1]))
        counts = [c for _, c in b]
        expect(all(counts[i] <= counts[i + 1] for i in range(len(counts) - 1)),
               "histogram %s: bucket counts are not cumulative: %r" % (name, counts))
        expect(all(c == int(c) for c in counts), "histogram %s: fractional bucket count" % name)
        expect(s["count"] is not None and s["sum"] is not None,
               "histogram %s: missing _count or _sum" % name)
        expect(counts[-1] == s["count"], "histogram %s: +Inf bucket %r != _count %r"
               % (name, counts[-1], s["count"]))
        expect(s["sum"] >= 0, "histogram %s: negative _sum" % name)


def value(families, name, **labels):
    """The value of the one sample named name whose labels equal labels exactly."""
    fname = _family_of(name, families)
    expect(fname is not None, "metric %s is missing from /metrics" % name)
    hits = [v for sn, lb, v in families[fname]["samples"] if sn == name and lb == labels]
    expect(len(hits) == 1, "metric %s%s: %d samples match (labels present: %r)"
           % (name, labels, len(hits),
              [lb for sn, lb, _ in families[fname]["samples"] if sn == name]))
    return hits[0]


def labelled(families, name, label):
    """{label value: sample value} for every sample of name (e.g. reason -> count)."""
    fname = _family_of(name, families)
    expect(fname is not None, "metric %s is missing from /metrics" % name)
    return {lb.get(label): v for sn, lb, v in families[fname]["samples"] if sn == name}


def wait_metric(gw, name, want, timeout=10, **labels):
    """Scrapes until metric name{labels} == want; returns the last families."""
    last = [None]

    def ok():
        fams = scrape(gw)
        last[0] = value(fams, name, **labels)
        return fams if last[0] == want else None
    try:
        return h.wait_until(ok, timeout, "%s%s == %r" % (name, labels or "", want), 0.1)
    except TestFailure:
        raise TestFailure("%s%s stayed at %r, expected %r" % (name, labels or "", last[0], want))


def metric(gw, name, **labels):
    """Scrapes and returns the one sample name{labels} (exact labels); fails if absent."""
    return value(scrape(gw), name, **labels)


def limit_hits(gw):
    """{limit label: count} of sluice_limit_hits_total."""
    return labelled(scrape(gw), "sluice_limit_hits_total", "limit")
