#!/usr/bin/env python3
"""Issue 7 (4): static files from --www DIR at /, and nothing outside DIR.

A fresh directory tree:

    T/outside.txt               a secret next to the web root
    T/outside_dir/secret.txt
    T/www/index.html  app.js  style.css  data.json  logo.svg  blob.bin
    T/www/sub/page.html
    T/www/.hidden  T/www/sub/.secret  T/www/.git/config
    T/www/link_out.txt  -> ../outside.txt       (relative symlink out)
    T/www/abs_link.txt  -> T/outside.txt        (absolute symlink out)
    T/www/linkdir       -> ../outside_dir       (directory symlink out)
    T/www/sub/esc.txt   -> ../../outside.txt

  - GET / and /index.html: 200 text/html with the file's exact bytes and
    length; .js is text/javascript, .css text/css, .json application/json,
    .svg image/svg+xml; over HTTP/1.1 (plain and TLS) and h2.
  - Directories are 404 (no listing): /sub, /sub/, /.git/.
  - Hidden files and directories are 404, encoded or not.
  - Traversal in every spelling (.., %2e%2e, mixed case, encoded slashes
    and backslashes, absolute-form target, double slashes, NUL) is 404 and
    never shows the secret; the same over h2 with curl --path-as-is.
  - Symlinks leading out of DIR are 404.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import h1_util as u  # noqa: E402
from harness import expect  # noqa: E402

SECRET = b"TOP-SECRET-OUTSIDE-WWW"
FILES = {
    "index.html": (b"<!doctype html><title>sluice test</title><p>index</p>\n", "text/html"),
    "app.js": (b"console.log('app');\n", "text/javascript"),
    "style.css": (b"body { color: black; }\n", "text/css"),
    "data.json": (b'{"a": 1}\n', "application/json"),
    "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>\n', "image/svg+xml"),
    "sub/page.html": (b"<p>sub page</p>\n", "text/html"),
}


def make_tree():
    t = h.tempdir("sluice-www-")
    www = os.path.join(t, "www")
    os.makedirs(os.path.join(www, "sub"))
    os.makedirs(os.path.join(www, ".git"))
    os.makedirs(os.path.join(t, "outside_dir"))
    for name, (data, _) in FILES.items():
        with open(os.path.join(www, name), "wb") as f:
            f.write(data)
    for path in ("outside.txt", "outside_dir/secret.txt", "www/.hidden", "www/sub/.secret",
                 "www/.git/config"):
        with open(os.path.join(t, path), "wb") as f:
            f.write(SECRET + b"\n")
    with open(os.path.join(www, "blob.bin"), "wb") as f:
        f.write(b"\x00\x01\x02")
    os.symlink("../outside.txt", os.path.join(www, "link_out.txt"))
    os.symlink(os.path.join(t, "outside.txt"), os.path.join(www, "abs_link.txt"))
    os.symlink("../outside_dir", os.path.join(www, "linkdir"))
    os.symlink("../../outside.txt", os.path.join(www, "sub", "esc.txt"))
    return www


def served(gw):
    checks = [("/", "index.html")] + [("/" + n, n) for n in FILES]
    for conn_kind in ("plain", "tls"):
        with (u.Conn.plain(gw) if conn_kind == "plain" else u.Conn.tls(gw)) as c:
            for path, name in checks:
                data, ctype = FILES[name]
                c.send(u.get(path))
                r = c.read_response()
                expect(r.status == 200, "%s %s: %d %r" % (conn_kind, path, r.status, r.body[:80]))
                got = (r.header("content-type") or "").split(";")[0].strip()
                expect(got == ctype, "%s %s: content-type %r, expected %s"
                       % (conn_kind, path, r.header("content-type"), ctype))
                expect(r.body == data and r.header("content-length") == str(len(data)),
                       "%s %s: body %r (content-length %s), expected the file's %d bytes"
                       % (conn_kind, path, r.body[:80], r.header("content-length"), len(data)))
    for path, name in checks:
        data, ctype = FILES[name]
        r = h.curl(gw, path)
        expect(r.version == "2" and r.status == 200 and r.body == data and
               (r.header("content-type") or "").startswith(ctype),
               "h2 %s: %r" % (path, r))
    r = h.curl(gw, "/blob.bin")
    expect(r.status == 200 and r.body == b"\x00\x01\x02", "h2 /blob.bin: %r" % r)
    h.log("%d files served with their content types over HTTP/1.1 (plain, TLS) and h2"
          % len(checks))


NOT_FOUND = [
    # directories: no listing
    "/sub", "/sub/", "/.git/", "/linkdir/", "//",
    # hidden files and directories
    "/.hidden", "/sub/.secret", "/.git/config", "/%2ehidden", "/%2Ehidden", "/sub/%2esecret",
    "/.git%2fconfig", "/%2egit/config",
    # traversal
    "/../outside.txt", "/%2e%2e/outside.txt", "/%2E%2E/outside.txt", "/.%2e/outside.txt",
    "/%2e./outside.txt", "/sub/../../outside.txt", "/sub/%2e%2e/%2e%2e/outside.txt",
    "/%2e%2e%2foutside.txt", "/sub%2f..%2f..%2foutside.txt", "/sub/..%2f..%2foutside.txt",
    "/..%5coutside.txt", "/..\\outside.txt", "/sub\\..\\..\\outside.txt",
    "/%252e%252e/outside.txt", "/../../../../../../etc/passwd", "//etc/passwd",
    "/%2fetc%2fpasswd", "/index.html%00.js", "/./index.html", "/sub/./page.html",
    "/sub//page.html", "/../www/index.html/../../outside.txt",
    # symlinks out of the root
    "/link_out.txt", "/abs_link.txt", "/linkdir/secret.txt", "/sub/esc.txt",
    # absent
    "/missing.html", "/index.html/", "/index.html/x",
]


def refused(gw):
    bad = []
    for path in NOT_FOUND:
        r, _ = u.one(gw, u.get(path))
        if r.status != 404 or SECRET in r.body:
            bad.append("HTTP/1.1 %s: %d %r" % (path, r.status, r.body[:80]))
        r = h.curl(gw, path, extra=["--path-as-is"])
        if r.status != 404 or SECRET in r.body:
            bad.append("h2 %s: %d %r" % (path, r.status, r.body[:80]))
    # Absolute-form targets are reduced to their path first.
    for target in ("http://localhost/../outside.txt", "http://localhost/%2e%2e/outside.txt",
                   "http://localhost/.hidden", "http://localhost/link_out.txt"):
        r, _ = u.one(gw, ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % target).encode())
        if r.status != 404 or SECRET in r.body:
            bad.append("absolute-form %s: %d %r" % (target, r.status, r.body[:80]))
    expect(not bad, "not refused:\n  " + "\n  ".join(bad))
    h.log("%d directory, hidden, traversal and symlink paths are 404 on both protocols"
          % (len(NOT_FOUND) + 4))


def test():
    www = make_tree()
    with h.Nats() as nats, u.gateway(nats.url, www=www) as gw:
        served(gw)
        refused(gw)
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=60)
