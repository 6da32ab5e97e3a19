"""Helpers for the operations tests (issue 6: admin, metrics, access log, drain, reload).

Standard library only, like harness.py, whose rules these keep: every wait
is bounded, every process is started through harness.spawn, every socket
is on 127.0.0.1.

- certificates: a second server certificate signed by the harness's CA,
  and the SHA-256 fingerprint a new TLS connection is served.
- access log reading.
"""

import calendar
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import time

import harness as h
from harness import HOST, TestFailure, expect


# ---------------------------------------------------------------------------
# certificates


def pem_fingerprint(pem_path):
    """SHA-256 of the first certificate in a PEM file (hex, lower case)."""
    with open(pem_path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    expect(m, "%s holds no certificate" % pem_path)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()


def served_fingerprint(gw, timeout=5):
    """The SHA-256 fingerprint of the certificate a NEW connection is served (verified)."""
    ctx = h.tls_context(gw)
    with socket.create_connection((HOST, gw.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def openssl_fingerprint(gw, timeout=10):
    """The same through openssl s_client | openssl x509 -fingerprint (SHA-256, hex)."""
    p = h.spawn(["openssl", "s_client", "-connect", "%s:%d" % (HOST, gw.port), "-alpn", "h2",
                 "-servername", "localhost"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise TestFailure("openssl s_client hung")
    x = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=out,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    m = re.search(rb"Fingerprint=([0-9A-F:]+)", x.stdout)
    expect(m, "openssl x509 found no certificate in s_client's output: %r %r"
           % (out[-300:], x.stderr[-300:]))
    return m.group(1).decode().replace(":", "").lower()


def make_server_cert(ca_dir, out_dir, cn="localhost"):
    """A new EC key and server certificate for localhost/127.0.0.1, signed by ca_dir's CA.

    Returns (cert path, key path). The harness's make-dev-cert.sh leaves
    ca.pem and ca.key in the gateway's directory, so curl --cacert and
    python's verification keep working with the new certificate.
    """
    os.makedirs(out_dir, exist_ok=True)
    key = os.path.join(out_dir, "server.key")
    csr = os.path.join(out_dir, "server.csr")
    ext = os.path.join(out_dir, "server.ext")
    pem = os.path.join(out_dir, "server.pem")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
    for cmd in (["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-subj", "/CN=%s" % cn, "-keyout", key, "-out", csr],
                ["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.pem"),
                 "-CAkey", os.path.join(ca_dir, "ca.key"), "-CAcreateserial",
                 "-CAserial", os.path.join(out_dir, "ca.srl"), "-days", "30",
                 "-extfile", ext, "-out", pem]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        expect(r.returncode == 0, "%s failed: %s" % (" ".join(cmd[:3]),
                                                      r.stdout.decode(errors="replace")))
    return pem, key


def replace_file(path, data):
    """Replaces path's contents in one rename, so a reader never sees half a file."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# access log

TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def read_jsonl(path):
    """Every line of an access log file, parsed; fails on a line that is not one JSON object."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    expect(not data or data.endswith(b"\n"), "%s ends in a partial line: %r" % (path, data[-200:]))
    out = []
    for n, ln in enumerate(data.split(b"\n")[:-1], 1):
        try:
            obj = json.loads(ln.decode("utf-8"))
        except ValueError as e:
            raise TestFailure("%s line %d is not JSON (%s): %r" % (path, n, e, ln[:300]))
        expect(isinstance(obj, dict), "%s line %d is not a JSON object: %r" % (path, n, ln[:200]))
        out.append(obj)
    return out


def log_epoch(entry):
    """An access log line's "time" as UTC seconds since the epoch (millisecond precision)."""
    t = entry["time"]
    expect(TIME_RE.match(t), "access log time %r is not YYYY-MM-DDTHH:MM:SS.mmmZ" % t)
    secs = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs + int(t[20:23]) / 1000.0
