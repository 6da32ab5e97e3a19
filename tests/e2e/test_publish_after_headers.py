#!/usr/bin/env python3
"""An event published as soon as a stream's response has arrived is delivered.

The 200 (and the retry: line after it) tells a client that its stream is
live. A service that publishes right after that, for instance because the
page asked it to, must not lose the event in the gap between the gateway
asking cnats to subscribe and the SUB reaching nats-server. So the NATS
subscription for a new subject must be in place on the server before the
gateway answers 200.

Unlike the other e2e tests, this one deliberately does NOT wait for
nats-server's /connz to show the subscription before publishing.

  1. curl: 10 fresh subjects, one at a time; publish the moment retry: arrives.
  2. sluice-client: 200 streams to 200 fresh subjects on one connection;
     publish to all of them the moment the ready file appears.
"""
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

CURL_ROUNDS = 10
CLIENT_SUBJECTS = 200


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw, nu.NatsClient(nats.port) as pub:
        lost = []
        for i in range(CURL_ROUNDS):
            subj = "fresh.curl.%d" % i
            with h.CurlStream(gw, "/events/" + subj, max_time=20) as s:
                _, _, off = s.wait_start(timeout=10)
                pub.pub(subj, "now")
                pub.flush()
                try:
                    s.wait_bytes(b"data: now\n\n", 10, off)  # a lost one never comes
                except h.TestFailure:
                    lost.append(subj)
        h.log("curl: %d of %d events published right after retry: were lost"
              % (len(lost), CURL_ROUNDS))

        paths = ["/events/fresh.client.%d" % i for i in range(CLIENT_SUBJECTS)]
        client = h.Client(gw, sum((["--path", p] for p in paths), []) + ["--expect-events", "1"],
                          timeout_ms=10000)
        client.wait_ready(timeout=20)
        for p in paths:
            pub.pub(p[len("/events/"):], "now")
        pub.flush()
        rc, rep = client.result()
        missing = CLIENT_SUBJECTS - len({e["stream"] for e in client.events()})
        h.log("sluice-client: %d of %d streams missed the event published on ready"
              % (missing, CLIENT_SUBJECTS))

        expect(not lost and missing == 0,
               "events published right after the response were lost: %d of %d curl streams "
               "(%s), %d of %d sluice-client streams; the gateway answers 200 before its NATS "
               "subscription is active on the server"
               % (len(lost), CURL_ROUNDS, ", ".join(lost[:3]), missing, CLIENT_SUBJECTS))
        expect(rc == 0 and rep.get("ok") is True, "sluice-client: exit %d report %r" % (rc, rep))
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
