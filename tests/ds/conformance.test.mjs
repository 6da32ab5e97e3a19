// The Durable Streams conformance suite (npm's @durable-streams/server-conformance-tests,
// pinned in package-lock.json) against the sluice gateway at DS_BASE_URL, run by vitest
// from tests/e2e/test_ds_conformance.py. Over https, every fetch of the suite goes through
// npm's undici with an Agent that offers h2 (allowH2) and trusts SLUICE_CA; which ALPN
// protocol carried the connections is counted from undici's diagnostics channel and
// written to DS_ALPN_FILE, so the test knows h2 really carried the suite.
import diagnostics from 'node:diagnostics_channel';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll } from 'vitest';
import { Agent, fetch as undiciFetch } from 'undici';
import { runConformanceTests } from '@durable-streams/server-conformance-tests';

const baseUrl = process.env.DS_BASE_URL;
if (!baseUrl) throw new Error('DS_BASE_URL is required');

const alpn = {};
diagnostics.subscribe('undici:client:connected', ({ socket }) => {
  const p = socket.alpnProtocol || 'http/1.1';
  alpn[p] = (alpn[p] || 0) + 1;
});

if (baseUrl.startsWith('https:')) {
  const agent = new Agent({ allowH2: true, connect: { ca: readFileSync(process.env.SLUICE_CA) } });
  globalThis.fetch = (url, init) => undiciFetch(url, { ...init, dispatcher: agent });
}

afterAll(() => {
  if (process.env.DS_ALPN_FILE) writeFileSync(process.env.DS_ALPN_FILE, JSON.stringify(alpn));
});

runConformanceTests({ baseUrl });
