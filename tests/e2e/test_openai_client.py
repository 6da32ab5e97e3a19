"""The official openai npm client streams chat completions through sluice.

A real nats-server, the real gateway with a request route
POST /v1/chat/completions -> llm.chat, and the reference service
(tools/sluice-llm) answering on llm.chat. The openai package (npm, the
version tests/openai/package-lock.json pins), with baseURL pointed at
the gateway, streams one chat completion over h2 (its `fetch` option with
undici's Agent allowH2) and one over HTTP/1.1 (node's own fetch, as the
client runs by default). Each must complete normally (the client ends at
data: [DONE]) and receive every chunk of the answer: the role chunk, every
expected token exactly once and in order, and the stop chunk. The ALPN
protocol undici negotiated proves which protocol carried the stream.
An answer the service refuses (max_tokens past its --max-tokens) is its
one `event: error` with Sse-End after the 200: the client must raise it
with the service's reason, over both protocols.

tests/openai/setup.sh installs node and the npm packages when missing; if
they cannot be had the test fails with the reason (a skip would hide a
broken client path).
"""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import llm_util as lu  # noqa: E402
from harness import expect  # noqa: E402

OPENAI_DIR = os.path.join(h.SRC, "tests", "openai")
SUBJECT = "llm.chat"
# The gateway's request route: the OpenAI path, to the service subject.
ROUTE = ["--request-route", "/v1/chat/completions " + SUBJECT]


def setup():
    r = subprocess.run(["sh", os.path.join(OPENAI_DIR, "setup.sh")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=280)
    h.log(r.stdout.decode(errors="replace").strip())
    node = shutil.which("node")
    expect(node, "node is not installed (scripts/deps.sh --node)")
    for p in ("openai", "undici"):
        expect(os.path.isdir(os.path.join(OPENAI_DIR, "node_modules", p)),
               "npm package %s is not installed in tests/openai (npm ci failed)" % p)
    return node


def chat(node, gw, proto, prompt, ntokens, ok=True):
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=gw.ca, SLUICE_CA=gw.ca)
    env.pop("http_proxy", None)
    env.pop("https_proxy", None)
    p = h.spawn([node, os.path.join(OPENAI_DIR, "chat.mjs"), gw.url("/v1"), proto, prompt,
                 str(ntokens)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise h.TestFailure("the openai client (%s) did not finish within 60 s" % proto)
    text = out.decode(errors="replace").strip()
    try:
        res = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        raise h.TestFailure("the openai client (%s) exited %d without a result: %s %s"
                            % (proto, p.returncode, text[-500:], err.decode(errors="replace")[-800:]))
    if ok:
        expect(p.returncode == 0 and res.get("completed"),
               "the openai client (%s) failed: %s" % (proto, res.get("error")))
    return res


def check(res, proto, alpn, prompt, ntokens):
    expect(res["status"] == 200, "%s: status %r" % (proto, res["status"]))
    expect((res["contentType"] or "").startswith("text/event-stream"),
           "%s: content-type %r" % (proto, res["contentType"]))
    expect(res["contentLocation"], "%s: no Content-Location (the resumable URL)" % proto)
    expect(res["alpn"] and all(a == alpn for a in res["alpn"]),
           "%s: the client's connections negotiated %r, want %s" % (proto, res["alpn"], alpn))
    chunks = res["chunks"]
    expect(len(chunks) == ntokens + 2, "%s: %d chunks, want %d (role + %d tokens + stop)"
           % (proto, len(chunks), ntokens + 2, ntokens))
    ids = set(c["id"] for c in chunks)
    # The service names its answer after the stream id the gateway sent it
    # (Sse-Stream-Id), the last part of the resumable URL.
    sid = res["contentLocation"].rsplit(".", 1)[-1]
    expect(ids == {"chatcmpl-" + sid}, "%s: chunk ids %r, want chatcmpl-%s" % (proto, ids, sid))
    first, last = chunks[0]["choices"][0], chunks[-1]["choices"][0]
    expect(first["delta"].get("role") == "assistant", "%s: first chunk %r" % (proto, first))
    expect(last["finish_reason"] == "stop", "%s: last chunk %r" % (proto, last))
    tokens = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    want = lu.expected_tokens(prompt, ntokens)
    expect(tokens == want, "%s: tokens differ from the answer at %s" % (proto, next(
        (i for i, (a, b) in enumerate(zip(tokens, want)) if a != b), len(want))))


def test():
    node = setup()
    with h.Nats() as nats, lu.Service(nats.url, "--rate", 200), \
            h.Gateway(nats.url, extra_args=ROUTE) as gw:
        for proto, alpn, n in (("h2", "h2", 120), ("h1", "http/1.1", 80)):
            prompt = "openai client over %s" % proto
            res = chat(node, gw, proto, prompt, n)
            check(res, proto, alpn, prompt, n)
            h.log("%s: the openai client received all %d chunks and completed; Content-Location %s"
                  % (proto, n + 2, res["contentLocation"]))
        for proto in ("h2", "h1"):
            res = chat(node, gw, proto, "too long", 5000, ok=False)
            expect(res["status"] == 200 and not res["completed"] and not res["chunks"] and
                   "max_tokens out of range" in (res.get("error") or ""),
                   "%s: a refused answer came to the client as %r" % (proto, res))
            h.log("%s: the service's error event reached the client as %r" % (proto, res["error"]))
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=280)
