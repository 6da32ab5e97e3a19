#!/usr/bin/env python3
"""Per-stream heap, allocation by allocation: the gateway under heaptrack
holding C connections x S idle TLS h2 streams on 1,000 subjects, SIGKILLed
while every stream is open, so that heaptrack's "leaked" is the live heap.

usage: stream_heap.py OUT CONNS STREAMS [--rss]
  OUT.zst is heaptrack's file; `heaptrack_print -f OUT.zst
  --flamegraph-cost-type leaked -F OUT.stacks` gives live bytes per stack.
  --rss: no heaptrack; prints the gateway's RSS per stream instead
  (after - before opening, /proc), the figure idle.py reports.
SLUICE_BIN picks the gateway binary (e.g. another commit's build)."""
import sys, os, time, signal, subprocess
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b
out, conns, streams = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rss = "--rss" in sys.argv[4:]
crt = b.certs(); nats = b.start_nats()
s = b.start_sluice(nats, crt, ["--stream-rate", "100000", "--max-streams-total", "0"],
                   wrap=() if rss else ["heaptrack", "-o", out])
time.sleep(1)
rss0 = s.rss_kb()
ready = out + ".ready"
if os.path.exists(ready): os.unlink(ready)
args = [b.binary("SLUICE_BENCH", "bench/sluice-bench"), "--connect", "%s:%d" % (b.HOST, s.port),
        "--cacert", crt["ca"], "--pub", "nats", "--pub-url", nats.url, "--subject", "bench.{s}",
        "--path", "/events/bench.{s}", "--connections", str(conns), "--streams", str(streams),
        "--subjects", "1000", "--rate", "0", "--duration", "60", "--drain", "0",
        "--open-timeout", "120", "--ready-file", ready]
c = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
t0 = time.time()
while not os.path.exists(ready) and time.time() - t0 < 150 and c.poll() is None:
    time.sleep(0.5)
print("open after %.1f s, ready=%s" % (time.time() - t0, os.path.exists(ready)))
time.sleep(2)
if rss:
    rss1 = s.rss_kb()
    print("rss before %d KiB, open %d KiB: %.0f B per stream"
          % (rss0, rss1, (rss1 - rss0) * 1024 / (conns * streams)))
pids = [p for p in b.descendants(s.proc.pid) if "sluice" in open("/proc/%d/cmdline" % p).read()]
print("sluice pids", pids, "load", open("/proc/loadavg").read().strip())
for p in pids:
    os.kill(p, signal.SIGKILL)
time.sleep(5)
c.kill(); c.wait()
try: s.proc.wait(timeout=120)
except Exception: pass
nats.stop() if hasattr(nats, "stop") else None
b.cleanup()
