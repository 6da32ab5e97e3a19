#!/usr/bin/env python3
"""JetStream resume storm: many streams reconnect at once with a
Last-Event-ID that the gateway's memory cannot serve.

Set-up, per case: nats-server -js (one, temp store) with stream BENCH on
`bench.>` (file storage) made anew and PRELOAD messages stored on bench.0;
a fresh gateway (`--jetstream-streams BENCH`); one holder stream per
subject for the whole case, so that subscriptions and history stay; then
WARM messages per subject published while the gateway listens, so that
memory history holds the newest 1,000 (the default). Then S streams open
at once (100 per TLS h2 connection), all with `Last-Event-ID: X`, K events
behind each subject's end: K = 500 is served from memory, K = 5,000 needs
a replay job that reads JetStream with an ordered consumer. Requests from
nearby positions on one subject share a job; at most --jetstream-replays
jobs run at once. One curl stream joins each storm and has its ids
checked exactly (X+1 .. last on bench.0, in order, once, no reset).

Full: S in {1,000, 5,000} x K in {500, 5,000}; the largest again with
--history-events 6000 (the same resume served from memory: what JetStream
adds) and with --jetstream-replays 1; and 8 subjects x 2,500 events with
--jetstream-replays 4 and 1 (8 jobs, so the limit matters; the 2,500 back
lie partly before the gateway started). --quick: S = 1,000, 4 subjects.

Per case: time until every stream is open (the 200 is sent once the
replay answered, so this is the replay's latency plus TLS and h2 set-up
and queueing the answers), time until the gateway has written every event
(sluice_events_delivered_total, polled every 0.1 s), gateway and
nats-server CPU until then (/proc), the gateway's peak RSS (VmHWM of a
fresh process) and RSS after the streams closed, the client's CPU
(sluice-bench and curl, reaped: getrusage of children), the replay
metrics' deltas, and the events received: sluice-bench counts events only
in its window (after every stream opened), so the total comes from its
bytes_total (every body byte from the start) over the exact size of the
events asked for, after the per-stream preamble curl saw. The gateway
runs with --heartbeat-ms 600000 so that no heartbeat adds bytes.

Rejected alternatives: one gateway and one stream for every case (peak
RSS would be the largest case's so far, and nats-server's cost depends on
where the sequences fall in its file-store blocks, see the README); the
nats CLI (not in Debian bookworm; the raw-socket client below is ~100
lines).
"""
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

STREAM = "BENCH"
PAYLOAD = 100      # bytes; sluice-bench's "<ns> <seq> " format, padded with x
PER_CONN = 100     # streams per h2 connection
WARM = 1500        # messages per subject published while each gateway listens (> history)
PRELOAD = 20000    # messages on bench.0 stored before each case's gateway starts


# ---------------------------------------------------------------- NATS

class Nats:
    """A tiny NATS client (raw socket, stdlib): requests to the JetStream
    API and fast plain publishes. Single-threaded."""

    def __init__(self, port):
        self.sock = socket.create_connection((b.HOST, port), timeout=10)
        self.buf = b""
        self.sid = 0
        info = self._line()
        if not info.startswith(b"INFO "):
            raise b.BenchError("nats: expected INFO, got %r" % info[:80])
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                          b'"no_responders":true,"protocol":1,"name":"bench-jetstream"}\r\n')
        self.ping()

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise b.BenchError("nats: connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise b.BenchError("nats: connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self):
        """The next MSG/HMSG as (sid, reply, headers, payload), answering
        PINGs; None on a PONG."""
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise b.BenchError("nats: %s" % line.decode())
            elif line.startswith(b"MSG "):
                parts = line.split()
                reply = parts[3] if len(parts) == 5 else None
                return int(parts[2]), reply, b"", self._bytes(int(parts[-1]))
            elif line.startswith(b"HMSG "):
                parts = line.split()
                reply = parts[3] if len(parts) == 6 else None
                data = self._bytes(int(parts[-1]))
                hl = int(parts[-2])
                return int(parts[2]), reply, data[:hl], data[hl:]
            elif line == b"PONG":
                return None

    def ping(self):
        self.sock.sendall(b"PING\r\n")
        while True:
            line = self._line()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise b.BenchError("nats: %s" % line.decode())

    def request(self, subject, body):
        self.sid += 1
        inbox = "_INBOX.bench.%d" % self.sid
        data = json.dumps(body).encode() if body is not None else b""
        self.sock.sendall(b"SUB %s %d\r\nUNSUB %d 1\r\nPUB %s %s %d\r\n%s\r\n"
                          % (inbox.encode(), self.sid, self.sid, subject.encode(),
                             inbox.encode(), len(data), data))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = self._next()
            if m is None or m[0] != self.sid:
                continue
            hdr, payload = m[2], m[3]
            if b" 503" in hdr.split(b"\r\n", 1)[0]:
                raise b.BenchError("nats: no responders for %s (JetStream off?)" % subject)
            doc = json.loads(payload)
            if "error" in doc:
                raise b.BenchError("nats: %s: %s" % (subject, doc["error"]))
            return doc
        raise b.BenchError("nats: no answer to %s" % subject)

    def publish(self, subjects, n, first_seq):
        """n plain PUBs round robin over subjects, payloads in sluice-bench's
        format (message j of a subject carries seq first_seq[s] + j)."""
        out = []
        seq = dict(first_seq)
        for i in range(n):
            s = subjects[i % len(subjects)]
            head = b"%019d %d " % (time.time_ns(), seq[s])
            seq[s] += 1
            body = head + b"x" * (PAYLOAD - len(head))
            out.append(b"PUB %s %d\r\n%s\r\n" % (s.encode(), len(body), body))
            if len(out) >= 2000:
                self.sock.sendall(b"".join(out))
                out = []
        if out:
            self.sock.sendall(b"".join(out))
        self.ping()
        return seq


def start_jetstream():
    port = b.free_port()
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(exe, os.X_OK):
        raise b.BenchError("nats-server is not installed (apt-get install nats-server)")
    store = b.tempdir("sluice-bench-js-")
    p = b.spawn([exe, "-a", b.HOST, "-p", str(port), "-js", "-sd", store],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.wait_until(lambda: b.tcp_open(port), 10, "nats-server -js on %d" % port)
    s = b.Server("nats", p)
    s.port = port
    s.url = "nats://%s:%d" % (b.HOST, port)
    return s


def last_seq(nc):
    return nc.request("$JS.API.STREAM.INFO." + STREAM, None)["state"]["last_seq"]


def wait_stored(nc, want):
    return b.wait_until(lambda: last_seq(nc) >= want and last_seq(nc), 30,
                        "JetStream to store up to sequence %d" % want)


# ---------------------------------------------------------------- gateway

def metrics(s):
    """The admin port's samples summed per name (labels dropped), plus
    'name{labels}' entries for labelled ones."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (b.HOST, s.admin_port), timeout=5) as r:
        text = r.read().decode()
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        try:
            key, val = ln.rsplit(" ", 1)
            v = float(val)
        except ValueError:
            continue
        name = key.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + v
        if "{" in key:
            out[key] = v
    return out


def status_kb(pid, field):
    """A KiB field of /proc/PID/status (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    return 0


class Ledger:
    """Which subject each stream sequence went to: publishing is in
    segments, each round robin over a list of subjects."""

    def __init__(self):
        self.segments = []  # (first seq, count, subjects)
        self.last = 0
        self.next_seq = {}  # per-subject seq for the payloads

    def publish(self, nc, subjects, count):
        for s in subjects:
            self.next_seq.setdefault(s, 0)
        self.next_seq = nc.publish(subjects, count, self.next_seq)
        self.segments.append((self.last + 1, count, list(subjects)))
        self.last += count
        return wait_stored(nc, self.last)

    def subject_of(self, q):
        for first, count, subjects in self.segments:
            if first <= q < first + count:
                return subjects[(q - first) % len(subjects)]
        raise b.BenchError("sequence %d was not published here" % q)

    def above(self, x, subject):
        """Stream sequences above x on subject."""
        return [q for q in range(x + 1, self.last + 1) if self.subject_of(q) == subject]


def event_bytes(seqs):
    """Body bytes of one event per sequence: id line, data line, blank line."""
    return sum(len("id: %d\n" % q) for q in seqs) + len(seqs) * (len("data: \n\n") + PAYLOAD)


def bench_cmd(gw, crt, conns, per_conn, subjects, extra):
    return [b.binary("SLUICE_BENCH", "bench/sluice-bench"), "--connect",
            "%s:%d" % (b.HOST, gw.port), "--cacert", crt["ca"], "--connections", str(conns),
            "--streams", str(per_conn), "--subjects", str(subjects),
            "--path", "/events/bench.{s}", "--rate", "0"] + extra


# ---------------------------------------------------------------- one case

def fresh_stream(nc):
    """Stream BENCH made anew with PRELOAD messages on bench.0: every case
    sees the same sequences in the same file-store blocks (see the README:
    nats-server 2.9's filtered reads across a block boundary cost ~13 x)."""
    try:
        nc.request("$JS.API.STREAM.DELETE." + STREAM, None)
    except b.BenchError as e:
        if "not found" not in str(e):
            raise
    nc.request("$JS.API.STREAM.CREATE." + STREAM,
               {"name": STREAM, "subjects": ["bench.>"], "storage": "file",
                "retention": "limits", "discard": "old", "num_replicas": 1})
    led = Ledger()
    led.publish(nc, ["bench.0"], PRELOAD)
    return led


def run_case(ctx, case):
    """One storm against a fresh gateway and a fresh stream: each of
    `streams` streams (stream i on bench.<i mod subjects>) resumes `back`
    events behind its subject's end. Returns the row."""
    streams, back, replays, subjects, history = case
    crt, js, nc = ctx["crt"], ctx["nats"], ctx["nc"]
    led = ctx["ledger"] = fresh_stream(nc)
    subj = ["bench.%d" % i for i in range(subjects)]
    extra = ["--jetstream-streams", STREAM, "--heartbeat-ms", "600000"]
    if replays != 4:
        extra += ["--jetstream-replays", str(replays)]
    if history:
        extra += ["--history-events", str(history)]
    if subjects > 1:
        # Stored before the gateway starts, as the preload is for bench.0:
        # the resume position lies below what the gateway ever saw live.
        led.publish(nc, subj, back * subjects)
    gw = b.start_sluice(js, crt, extra, plain=False)
    row = {"streams": streams, "back": back, "replays": replays, "subjects": subjects,
           "history_events": history or 1000,
           "connections": max(1, streams // PER_CONN), "sluice_args": extra,
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    # One stream per subject for the whole case: it keeps the subscriptions
    # and their history, and shows when the warm-up has arrived.
    hold = b.spawn(bench_cmd(gw, crt, 1, subjects, subjects,
                             ["--duration", "600", "--open-timeout", "10"]),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        b.wait_until(lambda: metrics(gw).get("sluice_streams_open", 0) >= subjects, 15,
                     "the holder streams")
        # Live warm-up: the gateway sees these, so memory history holds the
        # newest 1,000 per subject and nothing older.
        warm = max(WARM, (history or 0) + 500)
        d0 = metrics(gw).get("sluice_events_delivered_total", 0)
        led.publish(nc, subj, warm * subjects)
        b.wait_until(lambda: metrics(gw).get("sluice_events_delivered_total", 0)
                     >= d0 + warm * subjects, 30, "the warm-up to reach the holder")
        row["sluice_rss_kb_before"] = status_kb(gw.proc.pid, "VmRSS")
        row.update(storm(ctx, gw, case))
    finally:
        b.stop(hold)
        if gw.proc.poll() is not None:
            row["server_died"] = gw.proc.returncode
            b.log("  sluice DIED (exit %s):\n%s" % (gw.proc.returncode, gw.out.tail(5)))
        gw.stop()
        row["gateway_log"] = [ln for ln in gw.out.lines
                              if re.search(r"warn|error|fail|abort", ln, re.I)][-20:]
    return row


def storm(ctx, gw, case):
    streams, back, replays, subjects, history = case
    crt, js, led = ctx["crt"], ctx["nats"], ctx["ledger"]
    # One Last-Event-ID for every stream: `back` events behind on each subject.
    x = led.last - back * subjects
    per = {s: led.above(x, "bench.%d" % s) for s in range(subjects)}
    want = sum(len(per[i % subjects]) for i in range(streams))
    want_bytes = sum(event_bytes(per[i % subjects]) for i in range(streams))
    conns = max(1, streams // PER_CONN)
    # Bounded, and long enough for the writes: they ran at 4-5 M events/s
    # here with the client on the same two cores; half that, as margin.
    # A window too short shows as fewer events received than sent.
    dur = 1.5 + want / 2e6
    label = "S=%d K=%d subjects=%d replays=%d history=%d" % (streams, back, subjects, replays,
                                                            history or 1000)
    b.log("run: %s, Last-Event-ID %d, %d events to send" % (label, x, want))
    cmd = bench_cmd(gw, crt, conns, streams // conns, subjects,
                    ["--header", "Last-Event-ID: %d" % x, "--settle", "0",
                     "--duration", "%.1f" % dur, "--drain", "0", "--open-timeout", "60",
                     "--label=" + label] + gw.pid_args() + js.pid_args())
    curl_out = os.path.join(crt["dir"], "curl-%d.txt" % len(ctx["rows"]))

    m0 = metrics(gw)
    c0 = b.proc_sample(gw.proc.pid)[0]
    n0 = b.proc_sample(js.proc.pid)[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    bench = b.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # One more stream in the same storm, on bench.0, whose ids are checked one by one.
    curl = b.spawn(["curl", "-sN", "--http2", "--cacert", crt["ca"],
                    "--max-time", "%.0f" % (dur + 60), "-H", "Last-Event-ID: %d" % x,
                    "-o", curl_out, "https://%s:%d/events/bench.0" % (b.HOST, gw.port)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d0 = m0.get("sluice_events_delivered_total", 0)
    target = d0 + want + len(per[0])  # and curl's
    peak_rss = 0
    done = None
    timeline = []  # every 0.1 s: s, replays queued or running, streams open, events written
    # communicate() in a thread: the report may be large for a pipe.
    res = {}
    reader = threading.Thread(target=lambda: res.update(zip(("out", "err"), bench.communicate())),
                              daemon=True)
    reader.start()
    while reader.is_alive() and time.monotonic() - t0 < dur + 90:
        m = metrics(gw)
        peak_rss = max(peak_rss, status_kb(gw.proc.pid, "VmRSS"))
        timeline.append((round(time.monotonic() - t0, 2), m.get("sluice_jetstream_replays_active"),
                         m.get("sluice_streams_open"),
                         m.get("sluice_events_delivered_total", 0) - d0))
        if done is None and m.get("sluice_events_delivered_total", 0) >= target:
            done = (time.monotonic() - t0, b.proc_sample(gw.proc.pid)[0] - c0,
                    b.proc_sample(js.proc.pid)[0] - n0)
        reader.join(0.1)
    if reader.is_alive():
        b.stop(bench)
        reader.join(5)
        raise b.BenchError("sluice-bench did not finish: " + label)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b.stop(curl)
    # The gateway tears the closed connections down after the client exits.
    try:
        b.wait_until(lambda: metrics(gw).get("sluice_streams_open", 0) <= subjects, 15,
                     "the storm's streams to close", interval=0.1)
    except b.BenchError as e:
        b.log("  " + str(e))
    m1 = metrics(gw)
    c1 = b.proc_sample(gw.proc.pid)[0]
    n1 = b.proc_sample(js.proc.pid)[0]
    lines = [ln for ln in res.get("out", b"").decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise b.BenchError("sluice-bench exited %d without a report: %s"
                           % (bench.returncode, res.get("err", b"").decode()[-500:]))
    r = json.loads(lines[-1])
    r["exit"] = bench.returncode

    def delta(k):
        return m1.get(k, 0) - m0.get(k, 0)

    check = check_curl(curl_out, per[0])
    pre = check.get("preamble_bytes")
    got = None
    if pre is not None and want_bytes:
        # Every stream: the preamble curl saw (retry: hint, start id), then its events.
        got = want * (r["bytes_total"] - streams * pre) / want_bytes
    row = {
        "last_event_id": x, "last_seq": led.last, "events_per_stream": len(per[0]),
        "expected_events": want, "expected_bytes": want_bytes + streams * (pre or 0),
        "bench_duration_s": dur, "report": r, "open_s": r["open_s"], "open_ms": r["open_ms"],
        "all_sent_s": done[0] if done else None,
        "sluice_cpu_s": done[1] if done else c1 - c0,
        "nats_cpu_s": done[2] if done else n1 - n0,
        "sluice_cpu_s_to_end": c1 - c0, "nats_cpu_s_to_end": n1 - n0,
        "sluice_peak_rss_kb": max(peak_rss, status_kb(gw.proc.pid, "VmHWM")),
        "sluice_rss_kb_after": status_kb(gw.proc.pid, "VmRSS"),
        "sluice_streams_open_after": m1.get("sluice_streams_open"),
        "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "client_maxrss_kb": r["client"]["maxrss_kb"],
        "replays_run": delta("sluice_jetstream_replays_total"),
        "replay_requests": delta("sluice_jetstream_replay_requests_total"),
        "replays_active_after": m1.get("sluice_jetstream_replays_active"),
        "js_events_read": delta("sluice_jetstream_replayed_events_total"),
        "history_events_sent": delta("sluice_replayed_events_total"),
        "resumed": delta('sluice_resumes_total{result="replayed"}'),
        "resets": delta('sluice_resumes_total{result="reset"}'),
        "slow_consumer_cuts": delta("sluice_slow_consumer_cuts_total"),
        "events_delivered": delta("sluice_events_delivered_total"),
        "events_received_est": got, "curl": check, "timeline": timeline,
    }
    b.log("  %d/%d open in %.2f s, all sent at %s s, ~%s of %d events received, %d replays"
          " for %d requests, curl %s"
          % (r["streams_open"], streams, r["open_s"], b.fmt(row["all_sent_s"]),
             b.fmt(got, 0), want, row["replays_run"], row["replay_requests"],
             "ok" if check.get("ok") else check))
    return row


def check_curl(path, seqs):
    """The curl stream's events: exactly seqs as ids, in order, once, and
    no reset; and the bytes before its first event with data (the retry:
    hint and the start position, an id line with no data)."""
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError as e:
        return {"ok": False, "why": str(e)}
    ids, pre, pos = [], None, 0
    for block in body.split(b"\n\n"):
        lines = block.split(b"\n")
        has_data = any(ln.startswith(b"data:") for ln in lines)
        if has_data:
            if pre is None:
                pre = pos
            ids += [int(ln[4:]) for ln in lines if ln.startswith(b"id: ")]
        pos += len(block) + 2
    resets = body.count(b"event: reset")
    return {"ok": ids == seqs and resets == 0, "events": len(ids), "expected": len(seqs),
            "resets": resets, "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None, "preamble_bytes": pre,
            "head": body[:pre if pre else 200].decode("utf-8", "replace")}


# ---------------------------------------------------------------- main

def cases(quick):
    """(streams, events back per subject, --jetstream-replays, subjects,
    --history-events or None for the default 1,000)."""
    sizes = [1000] if quick else [1000, 5000]
    out = [(s, k, 4, 1, None) for s in sizes for k in (500, 5000)]
    big = sizes[-1]
    # The same resume served from memory: what JetStream adds.
    out.append((big, 5000, 4, 1, 6000))
    out.append((big, 5000, 1, 1, None))
    # Several subjects: one job each, so --jetstream-replays matters.
    n = 4 if quick else 8
    out += [(big, 2500, 4, n, None), (big, 2500, 1, n, None)]
    return out


def main():
    a = b.flags(sys.argv[1:])
    doc = {"scenario": "jetstream", "quick": a.quick, "meta": b.meta(), "rows": [],
           "nats_server": subprocess.run(["nats-server", "--version"], capture_output=True,
                                         text=True, timeout=10).stdout.strip()}
    crt = b.certs()
    js = start_jetstream()
    nc = Nats(js.port)
    doc["preloaded"] = PRELOAD
    ctx = {"crt": crt, "nats": js, "nc": nc, "rows": doc["rows"]}
    for case in cases(a.quick):
        try:
            row = run_case(ctx, case)
        except (b.BenchError, OSError) as e:
            b.log("  failed: %s" % e)
            row = dict(zip(("streams", "back", "replays", "subjects", "history_events"), case),
                       error=str(e))
        doc["rows"].append(row)
    nc.close()
    print_table(doc)
    b.save("jetstream-quick" if a.quick else "jetstream", doc)


def print_table(doc):
    rows = []
    for r in doc["rows"]:
        head = [r["streams"], r["back"], r["subjects"], r["replays"], r["history_events"]]
        if "error" in r:
            rows.append(head + ["error: " + r["error"]])
            continue
        om = r.get("open_ms") or {}
        ev = r["expected_events"]
        grew = (r["sluice_peak_rss_kb"] - r["sluice_rss_kb_before"]) * 1024.0
        rows.append(head + [
            r["report"]["streams_open"], r["open_s"], om.get("p50"), om.get("max"),
            r["all_sent_s"], r["events_received_est"], ev, r["curl"].get("ok"),
            r["replays_run"], r["replay_requests"], r["js_events_read"],
            r["sluice_cpu_s"], r["sluice_cpu_s"] / ev * 1e6, r["sluice_cpu_s"] / r["streams"] * 1e3,
            r["nats_cpu_s"], r["client_cpu_s"], r["client_cpu_s"] / ev * 1e6,
            r["sluice_peak_rss_kb"] / 1024.0, grew / ev, r["sluice_rss_kb_after"] / 1024.0,
            r["slow_consumer_cuts"] + r["resets"]])
    print(b.table(["S", "K", "subj", "replays", "history", "open", "open s", "open p50 ms",
                   "open max ms", "all sent s", "events got", "events want", "curl ok", "jobs",
                   "requests", "js events", "sluice cpu s", "us/event", "ms/stream",
                   "nats cpu s", "client cpu s", "client us/ev", "peak rss MiB", "B/event",
                   "rss after MiB", "cuts+resets"], rows))


if __name__ == "__main__":
    main()
