// The official Durable Streams client (npm's @durable-streams/client, pinned in
// package-lock.json) reads one JSON stream live from a fleet of gateways, for
// tests/e2e/test_ds_client.py. Usage: node reader.mjs MODE PATH BASE_URL...
// MODE is the client's live mode (sse or long-poll). Every request goes to the
// first gateway until it cannot be reached, then to the next: the client's own
// resume (the last Stream-Next-Offset) is what carries the read across. Prints
// one JSON line per item ({"item":...}), {"switched":N} when it moves on,
// {"resumed":offset} when it opens a new session after an error, and
// {"closed":true,"offset":...} when the client reports the stream's closure.
import { stream } from '@durable-streams/client';

const [mode, path, ...bases] = process.argv.slice(2);
let cur = 0;
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

async function fleetFetch(input, init) {
  for (;;) {
    const u = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const b = new URL(bases[cur]);
    u.protocol = b.protocol;
    u.host = b.host;
    try {
      return await fetch(u, init);
    } catch (e) {
      if (init?.signal?.aborted || cur + 1 >= bases.length) throw e;
      cur++;
      say({ switched: cur, why: String(e.cause?.code || e.message) });
    }
  }
}

// The client surfaces a broken connection as the session's error (res.closed
// rejects); resuming is the application's part of the protocol: a new session
// from the last offset the client delivered (res.offset).
let offset = '-1';
for (let session = 0; session < 20; session++) {
  let res;
  try {
    res = await stream({ url: bases[0] + path, offset, live: mode, fetch: fleetFetch });
  } catch (e) {
    say({ error: String(e.cause?.code || e.message), offset });
    await new Promise((r) => setTimeout(r, 200));
    continue;
  }
  res.subscribeJson(async (batch) => {
    for (const item of batch.items) say({ item });
    if (batch.streamClosed) {
      say({ closed: true, offset: batch.offset });
      process.exit(0);
    }
  });
  try {
    await res.closed;
  } catch (e) {
    say({ resumed: res.offset, why: String(e.cause?.code || e.message) });
  }
  offset = res.offset;
}
process.exit(1);
