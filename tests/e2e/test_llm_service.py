"""The reference service (tools/sluice-llm) against a real nats-server alone.

A request with a reply subject gets the chat.completion.chunk stream: a
role chunk, one chunk per token (every expected token exactly once, in
order), a stop chunk, then [DONE] with Sse-End and nothing after it. A
notice on the request's Sse-Cancel subject ends the answer early the same
way. --max-answers holds: requests past it get one error message with
Sse-End at once, and a freed slot takes the next request. Hostile bodies
(not JSON, no user message, bad max_tokens, over --max-body, nesting
past jansson's depth limit) each get exactly one error message and the
service keeps answering. SIGTERM ends answers in progress cleanly.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import llm_util as lu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

SUBJECT = "llm.chat"


def chunks_of(msgs):
    """The JSON chunks before [DONE]; checks the end: [DONE] last, with Sse-End, alone."""
    expect(msgs, "no messages")
    last = msgs[-1]
    expect(last.data == b"[DONE]" and "sse-end" in last.headers,
           "the answer does not end with [DONE] + Sse-End: %r %r" % (last.headers, last.data))
    ends = [m for m in msgs if "sse-end" in m.headers]
    expect(len(ends) == 1, "%d messages carry Sse-End" % len(ends))
    for m in msgs:
        expect("sse-event" not in m.headers, "a chunk carries Sse-Event: %r" % m.headers)
    return [json.loads(m.data) for m in msgs[:-1]]


def check_answer(msgs, prompt, ntokens=None, sid=None, model="sluice-llm"):
    """Checks the chunk format and order; returns the token texts."""
    chunks = chunks_of(msgs)
    expect(len(chunks) >= 2, "only %d chunks" % len(chunks))
    ids = set()
    for c in chunks:
        expect(c.get("object") == "chat.completion.chunk", "object is %r" % c.get("object"))
        expect(c.get("model") == model, "model is %r" % c.get("model"))
        expect(isinstance(c.get("created"), int) and c["created"] > 1.6e9, "created %r"
               % c.get("created"))
        expect(len(c["choices"]) == 1 and c["choices"][0]["index"] == 0, "choices %r"
               % c["choices"])
        ids.add(c["id"])
    expect(len(ids) == 1, "chunk ids differ: %r" % ids)
    cid = ids.pop()
    expect(cid.startswith("chatcmpl-"), "id %r" % cid)
    if sid:
        expect(cid == "chatcmpl-" + sid, "id %r does not carry Sse-Stream-Id %s" % (cid, sid))
    first, last = chunks[0]["choices"][0], chunks[-1]["choices"][0]
    expect(first["delta"] == {"role": "assistant", "content": ""} and
           first["finish_reason"] is None, "first chunk %r" % first)
    expect(last["delta"] == {} and last["finish_reason"] == "stop", "last chunk %r" % last)
    tokens = []
    for c in chunks[1:-1]:
        ch = c["choices"][0]
        expect(ch["finish_reason"] is None and list(ch["delta"]) == ["content"],
               "token chunk %r" % ch)
        tokens.append(ch["delta"]["content"])
    want = lu.expected_tokens(prompt, len(tokens) if ntokens is None else ntokens)
    if ntokens is None:
        expect(tokens == want, "tokens are not a prefix of the answer: %r" % tokens[:10])
    else:
        expect(tokens == want, "tokens %r, want %r" % (tokens[:8], want[:8]))
    return tokens


def answer_format(nats, nc):
    with lu.Service(nats.url, "--rate", 500) as svc:
        prompt = "what is sluice?"
        a = lu.Answer(nc).send(SUBJECT, lu.chat_body(prompt, max_tokens=25, model="m-1"),
                               {"Sse-Stream-Id": "0123456789abcdef0123456789abcdef"})
        msgs = a.wait_end()
        toks = check_answer(msgs, prompt, 25, sid="0123456789abcdef0123456789abcdef",
                            model="m-1")
        # Fence: a bad request on the same reply subject. Its error is the next
        # message, so nothing of the first answer followed its [DONE].
        a.send(SUBJECT, b"{bad")
        more = a.wait_count(len(msgs) + 1)
        expect(more[len(msgs)].headers.get("sse-event") == "error" and len(more) == len(msgs) + 1,
               "after [DONE]: %r" % [(m.headers, m.data[:80]) for m in more[len(msgs):]])
        h.log("25 tokens in order, role/stop chunks, [DONE] + Sse-End last: %r…" % toks[:3])

        # The default token count, the default model, content as an array of parts.
        body = json.dumps({"messages": [
            {"role": "user", "content": "earlier"}, {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "part one"},
                                         {"type": "text", "text": "part two"}]}]}).encode()
        msgs = lu.Answer(nc).send(SUBJECT, body).wait_end()
        check_answer(msgs, "part one part two ", 32)
        h.log("defaults: 32 tokens, model sluice-llm, content parts joined")
        expect(svc.stop() == 0, "sluice-llm exited non-zero")
        expect("2 answers (0 cancelled), 57 tokens, 1 bad requests" in svc.log(),
               "summary line: %s" % svc.log())


def cancel(nats, nc):
    with lu.Service(nats.url, "--rate", 20) as svc:
        prompt = "a long answer"
        a = lu.Answer(nc).send(SUBJECT, lu.chat_body(prompt, max_tokens=2000),
                               {"Sse-Cancel": "llm.cancel.abc"})
        a.wait_count(4)  # role chunk + 3 tokens
        t0 = time.monotonic()
        nc.pub("llm.cancel.abc", b"")
        nc.flush()
        msgs = a.wait_end(timeout=5)
        took = time.monotonic() - t0
        toks = check_answer(msgs, prompt)
        expect(3 <= len(toks) < 2000, "%d tokens before the cancel took effect" % len(toks))
        h.log("cancel: ended after %d tokens, %.0f ms after the notice" % (len(toks), took * 1e3))
        # A second notice to an ended answer is harmless (its subscription is gone).
        nc.pub("llm.cancel.abc", b"")
        nc.flush()
        msgs = lu.Answer(nc).send(SUBJECT, lu.chat_body("after", max_tokens=3)).wait_end()
        check_answer(msgs, "after", 3)
        svc.stop()
        expect("2 answers (1 cancelled)" in svc.log(), "summary: %s" % svc.log())


def cap(nats, nc):
    with lu.Service(nats.url, "--rate", 10, "--max-answers", 3) as svc:
        held = [lu.Answer(nc).send(SUBJECT, lu.chat_body("held %d" % i, max_tokens=2000),
                                   {"Sse-Cancel": "llm.cancel.cap%d" % i}) for i in range(3)]
        for a in held:
            a.wait_count(2)
        over = [lu.Answer(nc).send(SUBJECT, lu.chat_body("over %d" % i)) for i in range(2)]
        for a in over:
            msgs = a.wait_end(timeout=5)
            expect(len(msgs) == 1, "a refused request got %d messages" % len(msgs))
            m = msgs[0]
            expect(m.headers.get("sse-event") == "error", "refusal headers %r" % m.headers)
            err = json.loads(m.data)["error"]
            expect(err["type"] == "overloaded_error", "refusal %r" % err)
        h.log("3 answers held, the 4th and 5th refused at once: %r" % err["message"])
        nc.pub("llm.cancel.cap1", b"")
        nc.flush()
        held[1].wait_end()
        msgs = lu.Answer(nc).send(SUBJECT, lu.chat_body("freed", max_tokens=2)).wait_end()
        check_answer(msgs, "freed", 2)
        h.log("a cancelled answer's slot takes the next request")
        svc.stop()
        expect("2 refused busy" in svc.log(), "summary: %s" % svc.log())
        expect(svc.log().count("refusing requests") == 1, "the refusal is logged once")


BAD = [
    (b"{bad", "not a JSON object"),
    (b"[]", "not a JSON object"),
    (b"\xff\xfe{}", "not a JSON object"),
    (b'{"a":1,"a":2,"messages":[{"role":"user","content":"x"}]}', "not a JSON object"),
    (b'{"messages":[]}', "non-empty array"),
    (b'{"messages":"hello"}', "non-empty array"),
    (b'{"messages":[{"role":"system","content":"x"}]}', "no user message"),
    (b'{"messages":[{"role":"user","content":7}]}', "no user message"),
    (b'{"max_tokens":0,"messages":[{"role":"user","content":"x"}]}', "max_tokens"),
    (b'{"max_tokens":5000,"messages":[{"role":"user","content":"x"}]}', "max_tokens"),
    (b'{"max_tokens":"9","messages":[{"role":"user","content":"x"}]}', "max_tokens"),
    (b'{"model":"' + b"m" * 65 + b'","messages":[{"role":"user","content":"x"}]}', "model"),
    (b"[" * 5000 + b"]" * 5000, "not a JSON object"),
    (b'{"messages":[{"role":"user","content":"' + b"x" * 20000 + b'"}]}', "too large"),
    (b"", "not a JSON object"),
]


def bad_input(nats, nc):
    with lu.Service(nats.url, "--rate", 500, "--max-body", 16384) as svc:
        for body, why in BAD:
            a = lu.Answer(nc).send(SUBJECT, body, {"Sse-Cancel": "llm.cancel.bad"})
            msgs = a.wait_end(timeout=5)
            # Fence: a good request on the same reply subject; its chunks follow.
            a.send(SUBJECT, lu.chat_body("fence", max_tokens=1))
            allm = a.wait(lambda ms: sum("sse-end" in m.headers for m in ms) == 2, 5,
                          "the fence's answer")
            expect(len(msgs) == 1, "%r… got %d messages" % (body[:30], len(msgs)))
            m = msgs[0]
            expect(m.headers.get("sse-event") == "error", "%r… headers %r" % (body[:30], m.headers))
            err = json.loads(m.data)["error"]
            expect(err["type"] == "invalid_request_error" and why in err["message"],
                   "%r… answered %r, want %r" % (body[:30], err, why))
            check_answer(allm[1:], "fence", 1)
        # No reply subject: nothing to answer to, and the service goes on.
        nc.pub(SUBJECT, lu.chat_body("no reply"))
        msgs = lu.Answer(nc).send(SUBJECT, lu.chat_body("still here", max_tokens=2)).wait_end()
        check_answer(msgs, "still here", 2)
        expect(svc.proc.poll() is None, "sluice-llm died")
        svc.stop()
        h.log("%d hostile bodies, one error message each; the service still answers" % len(BAD))


def echo(nats, nc):
    with lu.Service(nats.url, "--rate", 500, "--text", "echo") as svc:
        msgs = lu.Answer(nc).send(SUBJECT, lu.chat_body("one two  three", max_tokens=5)).wait_end()
        toks = [c["choices"][0]["delta"].get("content") for c in chunks_of(msgs)[1:-1]]
        expect(toks == ["one ", "two ", "three ", "one ", "two "], "echo tokens %r" % toks)
        # A word past 48 bytes is cut on a UTF-8 boundary (47 "a" and a 2-byte letter).
        long_word = "a" * 47 + "\u00e9" + "z"
        msgs = lu.Answer(nc).send(SUBJECT, lu.chat_body(long_word, max_tokens=1)).wait_end()
        toks = [c["choices"][0]["delta"].get("content") for c in chunks_of(msgs)[1:-1]]
        expect(toks == ["a" * 47 + " "], "a long word's token is %r" % toks)
        svc.stop()


def empty_header_swallows_next(nats, nc):
    """cnats 3.4.1 reads an empty header value ("Sse-Principal:", as the gateway
    sends without auth) as the next header line: Sse-Stream-Id and Sse-Cancel
    must still be found."""
    with lu.Service(nats.url, "--rate", 20) as svc:
        a = lu.Answer(nc).send(SUBJECT, lu.chat_body("empty", max_tokens=2000), {
            "Sse-Principal": "", "Sse-Cancel": "llm.cancel.empty", "Sse-Stream-Id": "abc"})
        a.wait_count(3)
        nc.pub("llm.cancel.empty", b"")
        nc.flush()
        msgs = a.wait_end(timeout=5)
        toks = check_answer(msgs, "empty", sid="abc")
        expect(len(toks) < 2000, "the cancel was lost: %d tokens" % len(toks))
        svc.stop()
        h.log("an empty Sse-Principal before them: Sse-Cancel and Sse-Stream-Id still read")


def sigterm(nats, nc):
    svc = lu.Service(nats.url, "--rate", 10)
    a = lu.Answer(nc).send(SUBJECT, lu.chat_body("long", max_tokens=2000))
    a.wait_count(3)
    expect(svc.stop() == 0, "sluice-llm exited non-zero on SIGTERM")
    toks = check_answer(a.wait_end(timeout=5), "long")
    h.log("SIGTERM: the answer in progress ended cleanly after %d tokens" % len(toks))


def test():
    with h.Nats() as nats:
        nc = nu.NatsClient(nats.port)
        answer_format(nats, nc)
        cancel(nats, nc)
        cap(nats, nc)
        bad_input(nats, nc)
        echo(nats, nc)
        empty_header_swallows_next(nats, nc)
        sigterm(nats, nc)
        nc.close()


if __name__ == "__main__":
    h.main(test, deadline_s=120)
