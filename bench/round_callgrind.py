#!/usr/bin/env python3
"""Instructions (and, with --cache-sim=yes, cache misses) per delivered
event in one round, as million.py runs it, scaled down to run under
callgrind: C connections x S streams on K subjects, gateway with --workers
1. Counters are zeroed (callgrind_control -z) once every stream is open,
one 100-byte message per subject is published straight to nats-server,
and the counters are dumped (callgrind_control -d) once
sluice_events_delivered_total has grown by C x S. The dump,
OUTDIR/callgrind.out.<pid>.1, holds the round and nothing else (the admin
scrapes that watch it are visible as on_client_io).

usage: round_callgrind.py OUTDIR CONNS STREAMS SUBJECTS [valgrind options]"""
import sys, os, time, signal, subprocess, socket, glob, re, urllib.request
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b
out, conns, streams, subjects = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
extra = sys.argv[5:]
os.makedirs(out, exist_ok=True)
for f in glob.glob(out + "/callgrind.out*"): os.unlink(f)
crt = b.certs(); nats = b.start_nats()
wrap = ["valgrind", "--tool=callgrind", "--separate-threads=no"] + extra + \
       ["--callgrind-out-file=%s/callgrind.out.%%p" % out]
s = b.start_sluice(nats, crt, ["--workers", "1", "--drain-ms", "100", "--stream-rate", "100000",
                               "--max-streams-total", "0"], plain=False, wrap=wrap)
ready = out + "/ready"
if os.path.exists(ready): os.unlink(ready)
args = [b.binary("SLUICE_BENCH", "bench/sluice-bench"), "--connect", "%s:%d" % (b.HOST, s.port),
        "--cacert", crt["ca"], "--pub", "nats", "--pub-url", nats.url, "--subject", "bench.{s}",
        "--path", "/events/bench.{s}", "--connections", str(conns), "--streams", str(streams),
        "--subjects", str(subjects), "--rate", "0", "--duration", "600", "--drain", "0",
        "--open-timeout", "600", "--settle", "2", "--ready-file", ready]
c = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
t0 = time.time()
while not os.path.exists(ready) and time.time() - t0 < 900 and c.poll() is None:
    time.sleep(0.5)
print("open after %.1f s" % (time.time() - t0), flush=True)
time.sleep(3)
vpid = s.proc.pid
def metric(name):
    txt = urllib.request.urlopen("http://%s:%d/metrics" % (b.HOST, s.admin_port), timeout=60).read().decode()
    m = re.search(r"^%s(?:\{[^}]*\})? (\S+)" % name, txt, re.M)
    return float(m.group(1)) if m else None
ev0 = metric("sluice_events_delivered_total")
subprocess.run(["callgrind_control", "-z", str(vpid)], check=True, capture_output=True)
ev1 = metric("sluice_events_delivered_total")
print("events before", ev0, ev1, flush=True)
sk = socket.create_connection((b.HOST, nats.port)); sk.recv(4096)
sk.sendall(b"CONNECT {\"verbose\":false}\r\n")
pay = b"x" * 100
buf = b"".join(b"PUB bench.%d %d\r\n%s\r\n" % (i, len(pay), pay) for i in range(subjects))
sk.sendall(buf + b"PING\r\n"); 
t1 = time.time()
want = ev1 + conns * streams
while time.time() - t1 < 900:
    time.sleep(2)
    e = metric("sluice_events_delivered_total")
    if e is not None and e >= want: break
print("round took %.1f s under valgrind, events %s" % (time.time() - t1, e), flush=True)
time.sleep(2)
subprocess.run(["callgrind_control", "-d", "round", str(vpid)], check=True, capture_output=True)
time.sleep(3)
print("load", open("/proc/loadavg").read().strip(), flush=True)
c.kill(); c.wait()
s.proc.send_signal(signal.SIGKILL)
b.cleanup()
