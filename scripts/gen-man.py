#!/usr/bin/env python3
"""Writes a program's man page (roff) from its --help and the README.

One source each, so the page cannot drift: the options (and, for sluice,
the config keys, which are the same names) come from the program's own
--help text, which src/ops/config.c's table feeds (tests/unit/test_config.c
checks that every key of the table is in --help); the signals, endpoints,
metrics and exit statuses come from the README's sections, which the tests
already hold to the code. A build step (CMake target `man`) runs it; the
package installs the result as sluice(8), sluice-probe(1), sluice-pub(1).

  gen-man.py --prog BIN --name sluice --section 8 --readme README.md -o sluice.8
"""

import argparse
import os
import re
import subprocess
import sys

DATE = "2026"  # the page's date: fixed, so that builds are reproducible


def esc(text):
    """Roff-escapes one line of plain text (backslashes, leading dots, hyphens in flags)."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w-])--?(?=[\w])", lambda m: m.group(0).replace("-", "\\-"), text)
    # Non-ASCII (dashes, arrows, ≤) as groff's Unicode escapes: the page is plain ASCII.
    text = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def md(text):
    """Markdown inline markup to roff: `code` bold, **emphasis** plain, links as their text."""
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text).replace("**", "")
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) >= 2:
            out.append("\\fB" + esc(p[1:-1]) + "\\fR")
        else:
            out.append(esc(p))
    s = "".join(out)
    return "\\&" + s if s.startswith((".", "'")) else s


def help_entries(help_text):
    """[(spec, description)] from --help lines starting with two spaces and a dash."""
    entries = []
    for line in help_text.splitlines():
        m = re.match(r"  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if m and not m.group(2) and " " in m.group(1):
            # The option filled its column: the option and its argument, then the text.
            m = re.match(r"  (-\S+ \S+) (\S.*)$()", line)
        if m:
            entries.append([m.group(1).strip(), m.group(2) or ""])
        elif entries and re.match(r"\s{4,}\S", line):
            entries[-1][1] = (entries[-1][1] + " " + line.strip()).strip()
    return entries


def readme_section(text, heading):
    """The lines of the README section whose heading is `heading` (any level)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)", line)
        if m and m.group(2).strip() == heading:
            level = len(m.group(1))
            out = []
            for l in lines[i + 1:]:
                mm = re.match(r"(#+) ", l)
                if mm and len(mm.group(1)) <= level:
                    break
                out.append(l)
            return out
    sys.exit("gen-man.py: README has no section %r" % heading)


def table_rows(lines):
    """The body rows of the first markdown table in lines, as lists of cells."""
    rows, started = [], False
    for l in lines:
        if l.startswith("|"):
            cells = [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", l.strip())[1:-1]]
            if not started:
                started = True  # the header row
                continue
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            rows.append(cells)
        elif started:
            break
    return rows


def bullets_after(lines, marker):
    """The '- ' bullet list that follows the line `marker`, each bullet joined into one line."""
    out, on = [], False
    for l in lines:
        if l.strip() == marker:
            on = True
            continue
        if not on:
            continue
        if l.startswith("- "):
            out.append(l[2:].strip())
        elif l.startswith("  ") and out:
            out[-1] += " " + l.strip()
        elif l.strip() == "" and not out:
            continue
        elif l.strip() == "":
            continue
        else:
            break
    if not out:
        sys.exit("gen-man.py: README has no bullet list after %r" % marker)
    return out


def paragraph(lines):
    """The first prose paragraph of lines (no code, no table)."""
    out = []
    for l in lines:
        if not l.strip():
            if out:
                break
            continue
        if l.startswith(("    ", "|", "#")):
            if out:
                break
            continue
        out.append(l.strip())
    return " ".join(out)


def tp(out, tag, text):
    out.append(".TP")
    out.append(tag)
    out.append(text)


def sluice_sections(out, entries, readme):
    out.append(".SH CONFIGURATION FILE")
    out.append("\\fB\\-\\-config\\fR \\fIFILE\\fR reads an INI file first; every option "
               "above except \\fB\\-\\-config\\fR, \\fB\\-\\-help\\fR and "
               "\\fB\\-\\-version\\fR is also a key of that file, named as the long option "
               "without its dashes (\\fBheartbeat\\-ms = 500\\fR is \\fB\\-\\-heartbeat\\-ms "
               "500\\fR). Options given on the command line override the file. An optional "
               "\\fB[sluice]\\fR section header is accepted; `;' and `#' start comments. "
               "The keys:")
    keys = []
    for spec, _ in entries:
        for flag in re.findall(r"--([a-z0-9-]+)", spec):
            if flag not in ("config", "help", "version") and flag not in keys:
                keys.append(flag)
    out.append(".PP")
    out.append(", ".join("\\fB" + esc(k) + "\\fR" for k in keys) + ".")
    out.append(".SH SIGNALS")
    for b in bullets_after(readme_section(readme, "Running it"), "Signals:"):
        m = re.match(r"`([^`]+)`(?: / `([^`]+)`)?\s*(.*)", b)
        tag = "\\fB" + esc(m.group(1)) + "\\fR" + (
            ", \\fB" + esc(m.group(2)) + "\\fR" if m.group(2) else "")
        tp(out, tag, md(m.group(3)))
    out.append(".SH ENDPOINTS")
    out.append("On the TLS listener (and \\fB\\-\\-listen\\-plain\\fR):")
    for cells in table_rows(readme_section(readme, "Endpoints")):
        tp(out, md(cells[0]), md(cells[1]))
    out.append(".PP")
    out.append("On the admin listener (\\fB\\-\\-admin\\fR):")
    for cells in table_rows(readme_section(readme, "Admin listener")):
        tp(out, md(cells[0]), md(cells[1]))
    out.append(".SH METRICS")
    out.append("\\fB/metrics\\fR on the admin listener, Prometheus text format:")
    for cells in table_rows(readme_section(readme, "Metrics")):
        tp(out, md(cells[0]) + " (" + esc(cells[1]) + ")", md(cells[2]))
    out.append(".SH EXIT STATUS")
    for cells in table_rows(readme_section(readme, "Exit status")):
        tp(out, md(cells[0]), md(cells[1]))
    out.append(".SH FILES")
    for path, what in (("/etc/sluice/sluice.ini", "the configuration (a conffile)"),
                       ("/etc/sluice/tls/", "certificate and key (the package makes a "
                        "self-signed pair when none is there)"),
                       ("/var/log/sluice/access.log", "the access log; rotated by "
                        "logrotate, which sends SIGUSR1"),
                       ("/usr/share/doc/sluice/", "the README, edge proxy configurations, "
                        "the example configuration, alert rules and the Grafana dashboard")):
        tp(out, "\\fI" + esc(path) + "\\fR", esc(what))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prog", required=True, help="the program to run with --help")
    ap.add_argument("--name", required=True)
    ap.add_argument("--section", required=True)
    ap.add_argument("--summary", default="")
    ap.add_argument("--readme", required=True)
    ap.add_argument("-o", dest="out", required=True)
    a = ap.parse_args()
    r = subprocess.run([a.prog, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    help_text = r.stdout.decode()
    entries = help_entries(help_text)
    if not entries and a.name == "sluice":
        sys.exit("gen-man.py: no options in %s --help" % a.prog)
    with open(a.readme) as f:
        readme = f.read()
    lines = help_text.splitlines()
    usage = [lines[0][len("usage: "):] if lines[0].startswith("usage: ") else lines[0]]
    usage += [l.strip() for l in lines[1:] if re.match(r"\s+\[", l)]
    summary = paragraph(readme_section(readme, "sluice")) if a.name == "sluice" else a.summary
    out = ['.\\" Generated by scripts/gen-man.py from %s --help and README.md; do not edit.'
           % a.name,
           '.TH %s %s "%s" "sluice" "sluice manual"' % (a.name.upper(), a.section, DATE),
           ".SH NAME",
           "%s \\- %s" % (esc(a.name), esc(a.summary or
                                           "HTTP/2 Server-Sent Events gateway for NATS")),
           ".SH SYNOPSIS", ".nf"] + [esc(u) for u in usage] + [".fi",
           ".SH DESCRIPTION", md(summary),
           ".SH OPTIONS"]
    # The text between the usage line and the options, when there is some.
    for line in help_text.splitlines()[1:]:
        if re.match(r"\s*-", line):
            break
        if line.strip() and not line.startswith(" "):
            out.insert(out.index(".SH OPTIONS"), ".PP\n" + esc(line.strip()))
    if not entries:
        out.remove(".SH OPTIONS")
    for spec, text in entries:
        tag = re.sub(r"(\\-\\-?[\w\\-]+)", r"\\fB\1\\fR", esc(spec))
        tp(out, tag, esc(text) if text else "")
    if a.name == "sluice":
        sluice_sections(out, entries, readme)
    out.append(".SH SEE ALSO")
    others = [p for p in ("sluice(8)", "sluice-probe(1)", "sluice-pub(1)")
              if not p.startswith(a.name + "(")]
    out.append(", ".join("\\fB%s\\fR" % p.replace("-", "\\-") for p in others) +
               ", and /usr/share/doc/sluice/README.md.gz for the full guide.")
    text = "\n".join(out) + "\n"
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
