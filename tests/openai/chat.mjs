// The official openai client streams one chat completion from sluice's request
// route and prints what it received as one JSON object on stdout
// (tests/e2e/test_openai_client.py reads it and checks every token).
//
//   node chat.mjs BASE_URL h1|h2 PROMPT MAX_TOKENS
//
// h1: the client as its users run it, with node's own fetch (undici inside
// node, HTTP/1.1 only); the development CA comes from NODE_EXTRA_CA_CERTS.
// h2: the client's documented `fetch` option, with npm's undici and an Agent
// that offers ALPN h2 (allowH2) and trusts SLUICE_CA. Either way the ALPN
// protocol of every TLS connection is recorded from undici's diagnostics
// channel, which both undici copies publish to, so the test sees which
// protocol really carried the stream.
//
// SLUICE_TOKEN, when set, is sent as the API key (Authorization: Bearer).
import diagnostics from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { Agent, fetch as undiciFetch } from 'undici';

const [baseURL, proto, prompt, maxTokens] = process.argv.slice(2);
if (!baseURL || !['h1', 'h2'].includes(proto) || !prompt || !maxTokens) {
  console.error('usage: node chat.mjs BASE_URL h1|h2 PROMPT MAX_TOKENS');
  process.exit(2);
}

const alpn = [];
diagnostics.subscribe('undici:client:connected', ({ socket }) => {
  alpn.push(socket.alpnProtocol || 'none');
});

const opts = {
  baseURL,
  apiKey: process.env.SLUICE_TOKEN || 'not-needed',
  maxRetries: 0, // a retry would hide a failed stream
  timeout: 30000,
};
if (proto === 'h2') {
  const agent = new Agent({ allowH2: true, connect: { ca: readFileSync(process.env.SLUICE_CA) } });
  opts.fetch = (url, init) => undiciFetch(url, { ...init, dispatcher: agent });
}
const client = new OpenAI(opts);

const out = { alpn, status: null, contentType: null, contentLocation: null, chunks: [] };
try {
  const { data: stream, response } = await client.chat.completions
    .create({
      model: 'sluice-llm',
      messages: [{ role: 'user', content: prompt }],
      stream: true,
      max_tokens: Number(maxTokens),
    })
    .withResponse();
  out.status = response.status;
  out.contentType = response.headers.get('content-type');
  out.contentLocation = response.headers.get('content-location');
  for await (const chunk of stream) out.chunks.push(chunk);
  out.completed = true;
} catch (e) {
  out.completed = false;
  out.error = `${e.name}: ${e.message}${e.cause ? ` (cause: ${e.cause.message || e.cause})` : ''}`;
}
console.log(JSON.stringify(out));
process.exit(out.completed ? 0 : 1);
