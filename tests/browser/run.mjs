// sluice's browser tests: headless Chromium (Debian's /usr/bin/chromium,
// driven by npm's playwright-core) loads the demo page from a real gateway
// attached to a real nats-server, both on free loopback ports.
//
//   1. h2: 200 EventSources on ONE connection (DevTools Network events share
//      one connectionId, protocol h2; the gateway's metrics agree), each
//      receiving the event published on its own subject.
//   2. HTTP/1.1 cleartext listener: the six-connections-per-host starvation,
//      at most 6 open at any time, the page saying so.
//   3. Reconnects: (a) a network drop (a loopback TCP relay in front of the
//      TLS listener resets every connection) while numbered events flow: each
//      stream comes back on its own with Last-Event-ID and has every event
//      exactly once; (b) the page's own reconnect (es.close(), reopen with
//      ?last_event_id=) while events flow: no gap, no duplicate; (c) SIGKILL
//      and restart of the gateway on the same ports while numbered events
//      flow: a restarted gateway has no history, so each stream reports one
//      `event: reset` and goes on receiving live events; (d) the same with
//      JetStream (a nats-server with -js, a stream on demo.>, the gateway
//      started with --jetstream-streams): ids are stream sequences, so after
//      the SIGKILL and restart every stream resumes with no reset and has
//      every event exactly once, those published while no gateway ran too.
//   4. The chat panel: a POST to the request route /v1/chat/completions (a
//      gateway started with --request-route, tools/sluice-llm answering on
//      llm.chat) streams tokens through fetch; "Kill connection & resume"
//      aborts it mid-answer and GETs the Content-Location URL with
//      Last-Event-ID, and the page ends with every token of the reference
//      answer exactly once (checked here against the answer computed in this
//      file, and in DevTools: one POST, one GET carrying Last-Event-ID); "Stop"
//      sends DELETE and the answer ends early with finish_reason stop. Then,
//      with the answers in JetStream (a stream on $SLUICE.reply.>), the
//      gateway is SIGKILLed mid-answer and restarted on the same ports: the
//      page resumes by itself and again holds every token exactly once.
//   5. A finished job: a plain EventSource on a job subject (a gateway with
//      retry: 500 ms, no jitter) gets progress events, the last one with
//      Sse-End; the stream ends, the browser reconnects once with
//      Last-Event-ID = the end's id, gets 204 and closes (readyState CLOSED);
//      DevTools (and the access log) show exactly those two requests, 200
//      then 204, and no third one within 4 × retry:.
//   6. Screenshots (PNG) of the page in the build directory; paths printed.
//
// Closing line: `browser: N passed, M failed`. Exit 0 when all pass, 1 on a
// failure, 77 when Chromium or playwright-core is missing or Chromium cannot
// start here (ctest counts that as a failure too: scripts/test installs both).
//
// By hand: (cd tests/browser && npm ci) then, from the repository root,
//   SLUICE_BIN=build/sluice SLUICE_PUB=build/sluice-pub node tests/browser/run.mjs
// or `ctest --test-dir BUILD -L browser -V`, which also installs what is missing.
//
// Environment (set by ctest; a developer sets them by hand):
//   SLUICE_BIN, SLUICE_PUB, SLUICE_LLM, SLUICE_SRC     as for the e2e tests
//   SLUICE_BROWSER_OUT                     where screenshots go (default: $TMPDIR/sluice-browser-out)
//   SLUICE_CHROMIUM                        the browser (default /usr/bin/chromium)
//   SLUICE_BROWSER_ONLY                    a regex: run only the tests whose names match
//
// Every wait is bounded, every process is started here and killed by its PID
// (setpriv --pdeathsig makes the children die with this process even when it
// is SIGKILLed by a ctest timeout), all traffic stays on 127.0.0.1, and a
// watchdog turns a hang into a failure that still cleans up.
//
// Rejected alternative: @playwright/test. It wants to download its own
// browser builds and a runner around one script; the Debian browser and a
// plain script are enough.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = process.env.SLUICE_SRC || path.resolve(HERE, '..', '..');
const HOST = '127.0.0.1';
const SKIP = 77;
const N = 200;                  // streams per page; Chromium allows 256 per h2 connection
const WATCHDOG_MS = 420_000;    // ctest's TIMEOUT is 480 s; about 140 s on a quiet machine
const T0 = Date.now();

function log(msg) {
  console.log(`[${((Date.now() - T0) / 1000).toFixed(2).padStart(6)}] ${msg}`);
}

class TestFailure extends Error {}

function expect(cond, msg) {
  if (!cond) throw new TestFailure(msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls pred() (may be async) until truthy; returns its value or fails after timeoutMs. */
async function waitUntil(pred, timeoutMs, what, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await pred();
    if (last) return last;
    if (Date.now() >= deadline) throw new TestFailure(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------
// processes

const procs = new Set();
const tempDirs = [];
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

function which(name) {
  for (const dir of (process.env.PATH || '').split(':')) {
    const p = path.join(dir || '.', name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

function tool(env, name) {
  const p = process.env[env] || which(name);
  expect(p, `${env} is not set and ${name} is not on PATH`);
  expect(fs.existsSync(p), `${env}=${p} does not exist`);
  return p;
}

/** Starts a child that is remembered for the final kill; its output is kept in .out. */
function start(cmd, args, label) {
  const argv = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args];
  const p = spawn(argv[0], argv[1], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.label = label;
  p.out = '';
  p.exited = new Promise((resolve) => p.on('exit', (code, sig) => resolve({ code, sig })));
  p.done = false;
  p.exited.then(() => { p.done = true; procs.delete(p); });
  const keep = (chunk) => {
    p.out += chunk.toString();
    if (p.out.length > 200_000) p.out = p.out.slice(-100_000);
  };
  p.stdout.on('data', keep);
  p.stderr.on('data', keep);
  procs.add(p);
  return p;
}

/** SIGKILL by PID if still running, then wait for it (bounded). */
async function kill(p) {
  if (!p || p.done) return;
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {}
  await Promise.race([p.exited, sleep(5000)]);
}

function tail(text, lines = 30) {
  return (text || '').split('\n').slice(-lines).join('\n');
}

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.setTimeout(500, () => done(false));
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------------------
// nats-server, the gateway, publishers

/* nats-server picks its own port (-p -1) and names it: a port picked beforehand may be taken meanwhile. */
async function startNats(extraArgs = []) {
  const p = start(tool('NATS_SERVER', 'nats-server'), ['-a', HOST, '-p', '-1', ...extraArgs], 'nats-server');
  const m = await waitUntil(() => p.done || /Listening for client connections on [^\s]*:(\d+)/.exec(p.out),
    10_000, 'nats-server to listen');
  expect(!p.done && m !== true, `nats-server exited:\n${tail(p.out)}`);
  const port = +m[1];
  await waitUntil(async () => p.done || (await tcpOpen(port)), 10_000, 'nats-server to accept');
  expect(!p.done, `nats-server exited:\n${tail(p.out)}`);
  return { proc: p, port, url: `nats://${HOST}:${port}` };
}

const LISTEN_RE = /listening on https:\/\/[^ ]*:(\d+) \(h2\), plain on http:\/\/[^ ]*:(\d+), admin on http:\/\/[^ ]*:(\d+)/;

/**
 * Starts sluice; ports {tls, plain, admin} are 0 for "pick one" or the ports of
 * a gateway that just died (a restart). Retries a bind that fails while the
 * old sockets are still going away, for a bounded time. opts.nats replaces
 * env.nats, opts.args are added to the command line.
 */
async function startSluice(env, ports = { tls: 0, plain: 0, admin: 0 }, opts = {}) {
  const nats = opts.nats || env.nats;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const accessLog = path.join(env.tmp, `access-${++env.starts}.log`);
    const p = start(env.sluice, [
      '--listen', `${HOST}:${ports.tls}`, '--listen-plain', `${HOST}:${ports.plain}`,
      '--admin', `${HOST}:${ports.admin}`,
      '--cert', env.cert, '--key', env.key, '--nats', nats.url,
      '--www', path.join(SRC, 'www'),
      '--retry-ms', '1000', '--workers', '2', '--access-log', accessLog, ...(opts.args || []),
    ], 'sluice');
    const m = await waitUntil(() => p.done || LISTEN_RE.exec(p.out), 10_000, 'sluice to print its listening line');
    if (m !== true) {
      const g = { proc: p, tls: +m[1], plain: +m[2], admin: +m[3], accessLog };
      g.origin = `https://${HOST}:${g.tls}`;
      g.plainOrigin = `http://${HOST}:${g.plain}`;
      return g;
    }
    if (Date.now() >= deadline || !/bind|address/i.test(p.out)) {
      throw new TestFailure(`sluice exited at start:\n${tail(p.out)}`);
    }
    await sleep(200);
  }
}

async function metrics(g) {
  const { status, body } = await httpGet(`http://${HOST}:${g.admin}/metrics`);
  expect(status === 200, `/metrics answered ${status}`);
  const m = {};
  for (const line of body.split('\n')) {
    const mm = /^([a-z_]+(?:\{[^}]*\})?) ([0-9.eE+-]+)$/.exec(line);
    if (mm) m[mm[1]] = Number(mm[2]);
  }
  return m;
}

/**
 * A minimal NATS publisher over the text protocol (CONNECT, PUB, HPUB for the
 * Sse-Event and Sse-End headers, PING/PONG to flush), for publishing to 200 subjects at
 * once without 200 processes.
 */
class Nats {
  static connect(port) {
    return new Promise((resolve, reject) => {
      const n = new Nats();
      n.sock = net.connect({ host: HOST, port });
      n.buf = '';
      n.pongs = [];
      n.sock.setEncoding('utf8');
      n.sock.on('error', (e) => { n.error = e; n.pongs.splice(0).forEach((f) => f.reject(e)); reject(e); });
      n.sock.on('data', (d) => {
        n.buf += d;
        let i;
        while ((i = n.buf.indexOf('\r\n')) >= 0) {
          const line = n.buf.slice(0, i);
          n.buf = n.buf.slice(i + 2);
          if (line.startsWith('INFO') && !n.ready) {
            n.ready = true;
            n.sock.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"name":"sluice-browser-test"}\r\n');
            resolve(n);
          } else if (line === 'PING') {
            n.sock.write('PONG\r\n');
          } else if (line === 'PONG') {
            const f = n.pongs.shift();
            if (f) f.resolve();
          } else if (line.startsWith('-ERR')) {
            n.error = new Error(`nats: ${line}`);
          }
        }
      });
    });
  }

  /** extra: more headers, e.g. { 'Sse-End': '1' } to end the subject. */
  publish(subject, data, event, extra = {}) {
    const payload = Buffer.from(data);
    const lines = Object.entries(event ? { 'Sse-Event': event, ...extra } : extra).map(([k, v]) => `${k}: ${v}\r\n`);
    if (lines.length) {
      const hdr = Buffer.from(`NATS/1.0\r\n${lines.join('')}\r\n`);
      this.sock.write(`HPUB ${subject} ${hdr.length} ${hdr.length + payload.length}\r\n`);
      this.sock.write(Buffer.concat([hdr, payload, Buffer.from('\r\n')]));
    } else {
      this.sock.write(`PUB ${subject} ${payload.length}\r\n`);
      this.sock.write(Buffer.concat([payload, Buffer.from('\r\n')]));
    }
  }

  /** Resolves once nats-server has processed everything sent before. */
  async flush() {
    const pong = new Promise((resolve, reject) => this.pongs.push({ resolve, reject }));
    this.sock.write('PING\r\n');
    await Promise.race([pong, sleep(5000).then(() => { throw new TestFailure('no PONG from nats-server'); })]);
    if (this.error) throw this.error;
  }

  close() {
    this.sock.destroy();
  }
}

/**
 * sluice-pub --seq: numbered events "1", "2", … on one subject at a rate;
 * with `stream` ("NAME:SUBJECTS", to nats) JetStream publishes, each
 * acknowledged (stored) before the next.
 */
function publishNumbered(env, subject, { count, rate, event, nats, stream }) {
  const args = ['--nats', (nats || env.nats).url, '--subject', subject, '--seq', '--count', String(count), '--rate', String(rate)];
  if (event) args.push('--event', event);
  if (stream) args.push('--stream', stream);
  return start(env.pub, args, `sluice-pub ${subject}`);
}

/**
 * A loopback TCP relay in front of the TLS listener: the page is loaded
 * through it, and drop() resets every relayed connection at once, which is
 * what the browser sees when a network path dies (the gateway keeps running
 * and keeps its history).
 */
async function startRelay(targetPort) {
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: HOST, port: targetPort });
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => { pairs.delete(pair); client.destroy(); upstream.destroy(); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, HOST, resolve));
  return {
    port: server.address().port,
    get open() { return pairs.size; },
    drop() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
      return n;
    },
    close() {
      this.drop();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

// ---------------------------------------------------------------------------
// the page

/** Opens the demo page with DevTools Network events recorded for /events/ responses. */
async function openDemo(ctx, url) {
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  // DevTools' view of the network: the SSE responses by request id, and the page's own
  const seen = { events: new Map(), document: null };
  cdp.on('Network.responseReceived', (p) => {
    const r = p.response;
    const info = { url: r.url, status: r.status, protocol: r.protocol, connectionId: r.connectionId };
    if (p.type === 'Document') seen.document = info;
    if (new URL(r.url).pathname.startsWith('/events')) seen.events.set(p.requestId, info);
  });
  await cdp.send('Network.enable');
  const errors = [];
  page.on('pageerror', (e) => {
    log(`page error: ${e.message}`);
    errors.push(e.message);
  });
  await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
  return { page, cdp, net: seen, errors };
}

const summary = (page) => page.evaluate(() => window.sluiceDemo.summary());
const streams = (page) => page.evaluate(() => window.sluiceDemo.streams());

async function waitOpen(page, n, timeoutMs, what) {
  return waitUntil(async () => {
    const s = await summary(page);
    return s.open === n && s.total === n ? s : null;
  }, timeoutMs, what);
}

/** Data strings of the events a stream received, resets left out. */
function datas(st, type) {
  return st.recent.filter((e) => (type ? e.event === type : e.event !== 'reset')).map((e) => e.data);
}

/** Fails unless `got` is exactly 1..count in order. */
function expectNumbered(got, count, who) {
  const nums = got.map(Number);
  for (let k = 0; k < nums.length; k++) {
    if (nums[k] !== k + 1) {
      throw new TestFailure(`${who}: event ${k + 1} of the numbered flow is ${JSON.stringify(got[k])} ` +
        `(a gap or duplicate); around it: ${JSON.stringify(got.slice(Math.max(0, k - 3), k + 4))}`);
    }
  }
  expect(nums.length === count, `${who}: received ${nums.length} numbered events, expected ${count}`);
}

async function screenshot(env, page, name) {
  const file = path.join(env.out, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot: ${file}`);
  return file;
}

// ---------------------------------------------------------------------------
// the tests

async function testH2OneConnection(env) {
  const { page, net: nw, errors } = await openDemo(env.ctx, `${env.g.origin}/?n=${N}&mode=own`);
  try {
    const s = await waitOpen(page, N, 20_000, `${N} EventSources to open over h2`);
    expect(s.protocol === 'h2', `the page was loaded with ${s.protocol}, expected h2`);
    expect(/one HTTP\/2 connection/.test(s.banner), `banner says ${JSON.stringify(s.banner)}`);
    await waitUntil(() => nw.events.size >= N, 5000, `DevTools responses for ${N} /events/ requests`);
    const infos = [...nw.events.values()];
    const protos = new Set(infos.map((i) => i.protocol));
    const conns = new Set(infos.map((i) => i.connectionId));
    expect(infos.length === N, `DevTools saw ${infos.length} /events/ responses, expected ${N}`);
    expect(protos.size === 1 && protos.has('h2'), `stream protocols: ${[...protos].join(', ')}`);
    expect(infos.every((i) => i.status === 200), 'a stream answered other than 200');
    expect(conns.size === 1, `${N} streams used ${conns.size} connections (ids ${[...conns].slice(0, 8).join(', ')})`);
    log(`  ${N} streams open, protocol h2, one DevTools connectionId ${[...conns][0]}` +
      (nw.document ? ` (the page's own: ${nw.document.connectionId})` : ''));
    const m = await metrics(env.g);
    expect(m.sluice_streams_open === N, `gateway reports ${m.sluice_streams_open} streams open, expected ${N}`);

    // one event per subject, every other one named, from a plain NATS client
    for (let i = 0; i < N; i++) env.nc.publish(`demo.s${i}`, `hello ${i}`, i % 2 ? 'tick' : null);
    await env.nc.flush();
    await waitUntil(async () => (await summary(page)).events >= N, 10_000, `${N} events to arrive`);
    await sleep(300); // anything extra (a wrong delivery) would arrive now
    const all = await streams(page);
    for (const st of all) {
      const got = st.recent.map((e) => `${e.event}:${e.data}`);
      const want = `${st.i % 2 ? 'tick' : 'message'}:hello ${st.i}`;
      expect(got.length === 1 && got[0] === want, `stream #${st.i} received ${JSON.stringify(got)}, expected [${want}]`);
    }
    log(`  each of the ${N} streams received exactly its own event`);
    await sleep(400); // let the flash settle a little for the picture
    env.shots.push(await screenshot(env, page, 'browser-h2.png'));
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await page.close();
  }
  // The gateway's side: its access log writes a stream's line when it ends,
  // with the client's address and port, so the closed page's 200 streams
  // must all name one TCP connection. (Its connections_open gauge may also
  // count an idle socket that Chromium opened speculatively and never used.)
  const lines = await waitUntil(() => {
    const got = accessLines(env.g).filter((l) => /^\/events\/demo\.s\d+$/.test(l.path));
    return got.length >= N ? got : null;
  }, 10_000, `the access log to list the ${N} closed streams`);
  const clients = new Set(lines.map((l) => l.client));
  const protos = new Set(lines.map((l) => l.protocol));
  expect(lines.length === N, `the access log lists ${lines.length} streams, expected ${N}`);
  expect(clients.size === 1, `the gateway saw the streams from ${clients.size} connections: ${[...clients].slice(0, 8)}`);
  expect(protos.size === 1 && protos.has('h2'), `access log protocols: ${[...protos]}`);
  log(`  the gateway's access log agrees: ${N} h2 streams, all from ${[...clients][0]}`);
}

/** The JSON lines of a gateway's access log so far. */
function accessLines(g) {
  let text = '';
  try {
    text = fs.readFileSync(g.accessLog, 'utf8');
  } catch {}
  return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}

async function testH1Starvation(env) {
  const { page, net: nw, errors } = await openDemo(env.ctx, `${env.g.plainOrigin}/?n=${N}&mode=own`);
  try {
    await waitUntil(async () => (await summary(page)).open >= 6, 10_000, '6 streams to open over HTTP/1.1');
    let maxOpen = 0;
    let s;
    for (let k = 0; k < 10; k++) { // two seconds of watching: never more than six
      s = await summary(page);
      maxOpen = Math.max(maxOpen, s.open);
      await sleep(200);
    }
    expect(s.protocol === 'http/1.1', `the page was loaded with ${s.protocol}, expected http/1.1`);
    expect(maxOpen <= 6, `${maxOpen} streams were open at once over HTTP/1.1; browsers allow 6 connections per host`);
    expect(s.pending === N - s.open, `${s.pending} streams pending, expected ${N - s.open}`);
    expect(/waiting for a connection/.test(s.banner), `the banner does not show the starvation: ${JSON.stringify(s.banner)}`);
    const infos = [...nw.events.values()];
    const conns = new Set(infos.map((i) => i.connectionId));
    expect(infos.length <= 6, `DevTools saw ${infos.length} stream responses over HTTP/1.1`);
    expect(infos.every((i) => i.protocol === 'http/1.1'), `stream protocols: ${infos.map((i) => i.protocol)}`);
    expect(conns.size === infos.length, `${infos.length} open streams on ${conns.size} connections: expected one each`);
    const m = await metrics(env.g);
    const h1conns = m['sluice_connections_open{protocol="http/1.1"}'];
    expect(h1conns <= 6, `gateway reports ${h1conns} HTTP/1.1 connections open`);
    log(`  HTTP/1.1: ${s.open} of ${N} open (max ${maxOpen} while watching), ${s.pending} waiting; ` +
      `${conns.size} connections, gateway counts ${h1conns}`);

    // the open ones work, the starved ones get nothing
    for (let i = 0; i < N; i++) env.nc.publish(`demo.s${i}`, `hello ${i}`);
    await env.nc.flush();
    await waitUntil(async () => (await summary(page)).events >= s.open, 10_000, 'events on the open streams');
    await sleep(300);
    const all = await streams(page);
    const fed = all.filter((st) => st.events > 0);
    expect(fed.every((st) => st.state === 'open' && st.lastData === `hello ${st.i}`), 'an open stream got the wrong event');
    expect(fed.length === all.filter((st) => st.state === 'open').length, 'an open stream got nothing');
    expect(all.filter((st) => st.state === 'pending').every((st) => st.events === 0), 'a pending stream got an event');
    env.shots.push(await screenshot(env, page, 'browser-h1.png'));
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await page.close();
  }
}

async function testNetworkDropResumes(env) {
  const relay = await startRelay(env.g.tls);
  const subject = 'demo.flow.drop';
  const COUNT = 150;
  const { page, errors } = await openDemo(env.ctx,
    `https://${HOST}:${relay.port}/?n=${N}&mode=shared&subject=${subject}`);
  let pub;
  try {
    await waitOpen(page, N, 20_000, `${N} streams to open through the relay`);
    const m0 = await metrics(env.g);
    pub = publishNumbered(env, subject, { count: COUNT, rate: 50, event: 'tick' });
    await waitUntil(async () => (await streams(page)).every((st) => st.events >= 30), 30_000, 'the flow to reach every stream');
    const before = (await summary(page)).reconnects;
    const dropped = relay.drop();
    log(`  relay reset ${dropped} connection(s) mid-flow`);
    expect(dropped >= 1, 'the relay had no connection to drop');
    // retrying, or (a loaded machine polls slowly) already reconnected
    await waitUntil(async () => {
      const s = await summary(page);
      return s.retrying > 0 || s.reconnects > before;
    }, 15_000, 'the page to notice the drop');
    await waitUntil(async () => {
      const s = await summary(page);
      return s.reconnects >= N && s.open === N;
    }, 20_000, `all ${N} streams to reconnect`);
    const r = await Promise.race([pub.exited, sleep(15_000).then(() => null)]);
    expect(r && r.code === 0, `sluice-pub did not finish: ${r ? JSON.stringify(r) : 'timeout'} ${tail(pub.out, 5)}`);
    await waitUntil(async () => (await streams(page)).every((st) => st.lastData === String(COUNT)), 10_000,
      'every stream to receive the last numbered event');
    await sleep(300);
    const all = await streams(page);
    for (const st of all) {
      expect(st.resets === 0, `stream #${st.i} got a reset after a plain network drop`);
      expect(st.reconnects >= 1, `stream #${st.i} never reconnected`);
      expectNumbered(datas(st), COUNT, `stream #${st.i}`);
    }
    const m1 = await metrics(env.g);
    const withId = m1.sluice_streams_last_event_id_total - m0.sluice_streams_last_event_id_total;
    const resets = m1['sluice_resumes_total{result="reset"}'] - m0['sluice_resumes_total{result="reset"}'];
    expect(withId >= N, `only ${withId} streams came back with a Last-Event-ID`);
    expect(resets === 0, `the gateway sent ${resets} resets`);
    log(`  all ${N} streams reconnected with Last-Event-ID (gateway counted ${withId}) and have 1..${COUNT}, no gap`);
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await kill(pub);
    await page.close();
    await relay.close();
  }
}

async function testPageReconnectNoGap(env) {
  const subject = 'demo.flow.reopen';
  const COUNT = 150;
  const { page, errors } = await openDemo(env.ctx, `${env.g.origin}/?n=${N}&mode=shared&subject=${subject}`);
  let pub;
  try {
    await waitOpen(page, N, 20_000, `${N} streams to open`);
    pub = publishNumbered(env, subject, { count: COUNT, rate: 50 });
    await waitUntil(async () => (await streams(page)).every((st) => st.events >= 30), 30_000, 'the flow to reach every stream');
    await page.evaluate(() => window.sluiceDemo.reconnectAll());
    await waitUntil(async () => {
      const s = await summary(page);
      return s.reconnects >= N && s.open === N;
    }, 15_000, `all ${N} streams to reopen with ?last_event_id=`);
    const r = await Promise.race([pub.exited, sleep(15_000).then(() => null)]);
    expect(r && r.code === 0, `sluice-pub did not finish: ${r ? JSON.stringify(r) : 'timeout'}`);
    await waitUntil(async () => (await streams(page)).every((st) => st.lastData === String(COUNT)), 10_000,
      'every stream to receive the last numbered event');
    await sleep(300);
    for (const st of await streams(page)) {
      expect(st.resets === 0, `stream #${st.i} got a reset`);
      expectNumbered(datas(st), COUNT, `stream #${st.i}`);
    }
    log(`  all ${N} streams closed and reopened mid-flow, each has 1..${COUNT} exactly once`);
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await kill(pub);
    await page.close();
  }
}

async function testRestartResets(env) {
  const { page, errors } = await openDemo(env.ctx, `${env.g.origin}/?n=${N}&mode=own`);
  let pub;
  try {
    await waitOpen(page, N, 20_000, `${N} streams to open`);
    for (let i = 0; i < N; i++) env.nc.publish(`demo.s${i}`, `before ${i}`);
    await env.nc.flush();
    await waitUntil(async () => (await summary(page)).events >= N, 10_000, 'the first round of events');
    // numbered events on demo.s0 all through the restart
    pub = publishNumbered(env, 'demo.s0', { count: 0, rate: 20 });
    await waitUntil(async () => datas((await streams(page))[0]).filter((d) => /^\d+$/.test(d)).length >= 10, 5000,
      'numbered events on stream #0');

    const old = env.g;
    process.kill(old.proc.pid, 'SIGKILL');
    await Promise.race([old.proc.exited, sleep(5000)]);
    expect(old.proc.done, 'sluice did not die on SIGKILL');
    log('  sluice SIGKILLed');
    await waitUntil(async () => (await summary(page)).open === 0, 10_000, 'the page to see every stream drop');
    env.g = await startSluice(env, { tls: old.tls, plain: old.plain, admin: old.admin });
    log(`  sluice restarted on the same ports (${env.g.tls}, ${env.g.plain}, ${env.g.admin})`);

    const s = await waitUntil(async () => {
      const x = await summary(page);
      return x.open === N && x.withReset === N ? x : null;
    }, 25_000, `all ${N} streams to reconnect and report a reset`);
    expect(/reset/.test(await page.textContent('#banner')), 'the banner does not mention the reset');
    for (let i = 0; i < N; i++) env.nc.publish(`demo.s${i}`, `after ${i}`);
    await env.nc.flush();
    await waitUntil(async () => (await streams(page)).every((st) => datas(st).includes(`after ${st.i}`)), 10_000,
      'live events after the restart on every stream');
    await kill(pub);
    const all = await streams(page);
    for (const st of all) {
      const resets = st.recent.filter((e) => e.event === 'reset');
      expect(resets.length === 1, `stream #${st.i} got ${resets.length} resets, expected 1`);
      const body = JSON.parse(resets[0].data);
      expect(['unknown-id', 'history-expired'].includes(body.reason), `reset reason ${body.reason}`);
      expect(body.subjects && body.subjects[0] === st.subject, `reset names ${JSON.stringify(body.subjects)}`);
      if (st.i === 0) continue;
      const got = datas(st);
      expect(got.length === 2 && got[0] === `before ${st.i}` && got[1] === `after ${st.i}`,
        `stream #${st.i} received ${JSON.stringify(got)}`);
      const ri = st.recent.indexOf(resets[0]);
      expect(st.recent[ri - 1].data === `before ${st.i}` && st.recent[ri + 1].data === `after ${st.i}`,
        `stream #${st.i}: the reset is not between the events before and after the restart`);
    }
    // stream #0: numbered events before the restart in order, one reset where
    // the gateway lost them, numbered events after it in order
    const s0 = all[0].recent;
    const ri = s0.findIndex((e) => e.event === 'reset');
    const nums = (list) => list.map((e) => e.data).filter((d) => /^\d+$/.test(d)).map(Number);
    const before = nums(s0.slice(0, ri));
    const after = nums(s0.slice(ri + 1));
    expect(before.length >= 10 && after.length >= 3, `stream #0: ${before.length} numbered events before, ${after.length} after`);
    before.forEach((v, k) => expect(v === before[0] + k, `stream #0: gap or duplicate before the restart: ${before}`));
    after.forEach((v, k) => expect(v === after[0] + k, `stream #0: gap or duplicate after the restart: ${after}`));
    expect(after[0] > before[before.length - 1], 'stream #0: numbers went backwards across the restart');
    log(`  all ${N} streams reconnected to the new gateway, each reported one reset (${s.resets} in all) ` +
      `and received live events; stream #0 numbered ${before[0]}..${before.at(-1)}, reset, ${after[0]}..${after.at(-1)}`);
    await sleep(300);
    env.shots.push(await screenshot(env, page, 'browser-restart.png'));
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await kill(pub);
    await page.close();
  }
}

// tools/sluice-llm.c's LOREM: its answer to a prompt is a function of the prompt.
const LOREM = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ' +
  'incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud ' +
  'exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in ' +
  'reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint').split(' ');

function llmAnswer(prompt, n) {
  let h = 2166136261;
  for (const b of Buffer.from(prompt, 'utf8')) h = Math.imul(h ^ b, 16777619) >>> 0;
  return Array.from({ length: n }, (_, i) => LOREM[(h + i) % LOREM.length] + ' ');
}

/**
 * (4) The chat panel against the reference service: kill & resume, then stop.
 * A gateway of its own with the request route; the page with autostart=0, so
 * no EventSource competes with the chat's fetch.
 */
async function testChatPanel(env) {
  const llm = start(tool('SLUICE_LLM', 'sluice-llm'), ['--nats', env.nats.url, '--rate', '40'], 'sluice-llm');
  await waitUntil(() => llm.done || /ready on/.test(llm.out), 10_000, 'sluice-llm to subscribe');
  expect(!llm.done, `sluice-llm exited:\n${tail(llm.out)}`);
  const g = await startSluice(env, undefined, { args: ['--request-route', '/v1/chat/completions llm.chat'] });
  const { page, cdp, errors } = await openDemo(env.ctx, `${g.origin}/?autostart=0`);
  const requests = [];
  cdp.on('Network.requestWillBeSent', (p) => {
    const u = new URL(p.request.url);
    if (u.pathname.startsWith('/v1/') || u.pathname.startsWith('/streams/')) {
      const h = Object.fromEntries(Object.entries(p.request.headers).map(([k, v]) => [k.toLowerCase(), v]));
      requests.push({ method: p.request.method, path: u.pathname, lastEventId: h['last-event-id'] });
    }
  });
  const chat = () => page.evaluate(() => {
    const s = window.sluiceChat.state;
    return { phase: s.phase, tokens: s.tokens.slice(), resumes: s.resumes, url: s.url, finish: s.finish,
      lastId: s.lastId };
  });
  try {
    const prompt = 'Why does a token stream need to resume?';
    await page.fill('#chat-prompt', prompt);
    await page.fill('#chat-tokens', '200');
    await page.click('#chat-send');
    await waitUntil(async () => (await chat()).tokens.length >= 30, 15_000, '30 tokens in the chat panel');
    const before = await chat();
    await page.click('#chat-kill');
    const done = await waitUntil(async () => {
      const c = await chat();
      return c.phase === 'done' || c.phase === 'failed' ? c : null;
    }, 20_000, 'the resumed answer to end');
    expect(done.phase === 'done', `the answer ended ${done.phase}: ${await page.textContent('#chat-status')}`);
    const want = llmAnswer(prompt, 200);
    const k = done.tokens.findIndex((t, i) => t !== want[i]);
    expect(k < 0 && done.tokens.length === 200,
      `the page holds ${done.tokens.length} tokens; first difference at ${k}: ` +
      `${JSON.stringify(done.tokens[k])} for ${JSON.stringify(want[k])}`);
    expect(done.resumes === 1 && done.finish === 'stop', `resumes ${done.resumes}, finish ${done.finish}`);
    expect(/each exactly once/.test(await page.textContent('#chat-check')), 'the panel does not say every token came once');
    const posts = requests.filter((r) => r.method === 'POST');
    const gets = requests.filter((r) => r.method === 'GET');
    expect(posts.length === 1 && posts[0].path === '/v1/chat/completions', `POSTs: ${JSON.stringify(posts)}`);
    expect(gets.length === 1 && gets[0].path === new URL(done.url).pathname && gets[0].lastEventId,
      `the resume: ${JSON.stringify(gets)} (Content-Location ${done.url})`);
    log(`  killed after ${before.tokens.length} tokens (event id ${before.lastId}), resumed by GET ${gets[0].path} ` +
      `with Last-Event-ID ${gets[0].lastEventId}: all 200 tokens exactly once`);

    await page.fill('#chat-tokens', '2000');
    await page.click('#chat-send');
    await waitUntil(async () => (await chat()).tokens.length >= 10, 15_000, '10 tokens of the second answer');
    await page.click('#chat-stop');
    const stopped = await waitUntil(async () => {
      const c = await chat();
      return c.phase === 'done' || c.phase === 'failed' ? c : null;
    }, 15_000, 'the stopped answer to end');
    expect(stopped.phase === 'done' && stopped.finish === 'stop' && stopped.tokens.length < 2000,
      `after Stop: ${stopped.phase}, finish ${stopped.finish}, ${stopped.tokens.length} tokens`);
    const want2 = llmAnswer(prompt, stopped.tokens.length);
    expect(stopped.tokens.every((t, i) => t === want2[i]), 'the stopped answer is not a prefix of the answer');
    expect(requests.some((r) => r.method === 'DELETE' && r.path === new URL(stopped.url).pathname), 'no DELETE was sent');
    log(`  Stop (DELETE) ended the second answer after ${stopped.tokens.length} of 2000 tokens`);
    env.shots.push(await screenshot(env, page, 'browser-chat.png'));
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await page.close();
    await kill(g.proc);
    await kill(llm);
  }
}

/**
 * (4, cont.) The gateway SIGKILLed mid-answer, its answers in JetStream: a
 * nats-server with -js, the stream REPLIES on $SLUICE.reply.> (the default
 * reply prefix), a gateway with --jetstream-streams REPLIES and the request
 * route. The page's fetch breaks; the panel resumes by itself (GET
 * Content-Location with Last-Event-ID) once a new gateway listens on the
 * same ports, and ends with every token of the answer exactly once.
 */
async function testChatGatewayKilled(env) {
  const storeDir = path.join(env.tmp, 'jetstream-chat');
  fs.mkdirSync(storeDir, { recursive: true });
  let nats, llm, g, page, errors;
  try {
    nats = await startNats(['-js', '--store_dir', storeDir]);
    const mk = start(env.pub, ['--nats', nats.url, '--stream', 'REPLIES:$SLUICE.reply.>'], 'sluice-pub --stream');
    const mkr = await Promise.race([mk.exited, sleep(10_000).then(() => null)]);
    expect(mkr && mkr.code === 0, `sluice-pub --stream REPLIES failed: ${tail(mk.out, 5)}`);
    llm = start(tool('SLUICE_LLM', 'sluice-llm'), ['--nats', nats.url, '--rate', '30'], 'sluice-llm');
    await waitUntil(() => llm.done || /ready on/.test(llm.out), 10_000, 'sluice-llm to subscribe');
    const args = ['--jetstream-streams', 'REPLIES', '--request-route', '/v1/chat/completions llm.chat'];
    g = await startSluice(env, undefined, { nats, args });
    ({ page, errors } = await openDemo(env.ctx, `${g.origin}/?autostart=0`));
    const chat = () => page.evaluate(() => {
      const s = window.sluiceChat.state;
      return { phase: s.phase, tokens: s.tokens.slice(), resumes: s.resumes, finish: s.finish, lastId: s.lastId };
    });
    const prompt = 'the gateway goes away';
    const n = 240;
    await page.fill('#chat-prompt', prompt);
    await page.fill('#chat-tokens', String(n));
    await page.click('#chat-send');
    await waitUntil(async () => (await chat()).tokens.length >= 30, 15_000, '30 tokens');
    const old = g;
    process.kill(old.proc.pid, 'SIGKILL');
    await Promise.race([old.proc.exited, sleep(5000)]);
    expect(old.proc.done, 'sluice did not die on SIGKILL');
    const atKill = await chat();
    g = await startSluice(env, { tls: old.tls, plain: old.plain, admin: old.admin }, { nats, args });
    log(`  sluice SIGKILLed after ${atKill.tokens.length} tokens (event id ${atKill.lastId}), restarted on the same ports`);
    const done = await waitUntil(async () => {
      const c = await chat();
      return c.phase === 'done' || c.phase === 'failed' ? c : null;
    }, 40_000, 'the answer to end after the restart');
    expect(done.phase === 'done', `the answer ended ${done.phase}: ${await page.textContent('#chat-status')}`);
    expect(atKill.tokens.length < n, `the answer had ended (${atKill.tokens.length} tokens) before the kill`);
    const want = llmAnswer(prompt, n);
    const k = done.tokens.findIndex((t, i) => t !== want[i]);
    expect(k < 0 && done.tokens.length === n,
      `the page holds ${done.tokens.length} tokens; first difference at ${k}`);
    expect(done.resumes >= 1 && done.finish === 'stop', `resumes ${done.resumes}, finish ${done.finish}`);
    log(`  resumed by itself (resumes: ${done.resumes}) from JetStream: all ${n} tokens exactly once`);
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    if (page) await page.close();
    if (g) await kill(g.proc);
    await kill(llm);
    if (nats) await kill(nats.proc);
  }
}

/**
 * (5) A finished job stops its EventSource for good. A gateway of its own
 * with retry: 500 ms and no jitter; a plain EventSource on a job subject gets
 * progress events, the last one carrying Sse-End. The stream ends cleanly
 * (error event, readyState CONNECTING), the browser reconnects once after
 * retry: with Last-Event-ID = the end's id, gets 204 and closes
 * (readyState CLOSED, a second error event). DevTools must then show exactly
 * those two requests and no third one for a wait of 4 × retry:. A gateway
 * that answered the reconnect 200 (a stream that ends at once, as one did for
 * an id it did not know) would make Chromium reconnect every 500 ms.
 */
async function testFinishedJobStops(env) {
  const RETRY_MS = 500;
  const subject = 'job.browser';
  const progress = ['10%', '40%', '70%'];
  const g = await startSluice(env, undefined, { args: ['--retry-ms', String(RETRY_MS), '--retry-jitter-pct', '0'] });
  const { page, cdp, errors } = await openDemo(env.ctx, `${g.origin}/?autostart=0`);
  const reqs = new Map(); // DevTools request id -> { lastEventId, status }
  const isJob = (url) => new URL(url).pathname === `/events/${subject}`;
  const lower = (hs) => Object.fromEntries(Object.entries(hs || {}).map(([k, v]) => [k.toLowerCase(), v]));
  // The headers as sent on the wire (EventSource adds Last-Event-ID itself) come in
  // requestWillBeSentExtraInfo, which DevTools may fire before or after requestWillBeSent.
  const wire = new Map(); // DevTools request id -> Last-Event-ID on the wire
  cdp.on('Network.requestWillBeSent', (p) => {
    if (!isJob(p.request.url)) return;
    reqs.set(p.requestId, {
      lastEventId: lower(p.request.headers)['last-event-id'] || wire.get(p.requestId) || null, status: null,
    });
  });
  cdp.on('Network.requestWillBeSentExtraInfo', (p) => {
    const id = lower(p.headers)['last-event-id'];
    if (!id) return;
    wire.set(p.requestId, id);
    const r = reqs.get(p.requestId);
    if (r) r.lastEventId = id;
  });
  cdp.on('Network.responseReceived', (p) => {
    const r = reqs.get(p.requestId);
    if (r) r.status = p.response.status;
  });
  const state = () => page.evaluate(() => window.jobTest);
  try {
    await page.evaluate((url) => {
      const t = { events: [], errors: [], opens: 0, readyState: 0, closedAt: null };
      window.jobTest = t;
      const es = new EventSource(url);
      es.onopen = () => { t.opens++; t.readyState = es.readyState; };
      es.addEventListener('progress', (e) => t.events.push({ data: e.data, id: e.lastEventId }));
      es.onerror = () => {
        t.errors.push(es.readyState);
        t.readyState = es.readyState;
        if (es.readyState === EventSource.CLOSED && t.closedAt === null) t.closedAt = Date.now();
      };
    }, `/events/${subject}`);
    await waitUntil(async () => (await state()).opens === 1, 10_000, 'the EventSource to open');
    for (const p of progress) env.nc.publish(subject, p, 'progress');
    env.nc.publish(subject, '100%', 'progress', { 'Sse-End': '1' });
    await env.nc.flush();
    const closed = await waitUntil(async () => {
      const t = await state();
      return t.readyState === 2 ? t : null;
    }, 15_000, 'the EventSource to close (readyState 2) after the end and the reconnect').catch((e) => {
      throw new TestFailure(`${e.message}; DevTools saw ${reqs.size} requests for /events/${subject}, statuses ` +
        JSON.stringify([...reqs.values()].map((r) => r.status)));
    });
    const got = closed.events.map((e) => e.data);
    expect(JSON.stringify(got) === JSON.stringify([...progress, '100%']), `progress events received: ${JSON.stringify(got)}`);
    const endId = closed.events[closed.events.length - 1].id;
    expect(/^\d+$/.test(endId), `the end's id: ${JSON.stringify(endId)}`);
    // error 1: the stream ended (CONNECTING, reconnect pending); error 2: the 204 (CLOSED)
    expect(JSON.stringify(closed.errors) === '[0,2]', `error events at readyStates ${JSON.stringify(closed.errors)}, expected [0,2]`);
    const quiet = 4 * RETRY_MS;
    await sleep(quiet);
    const t = await state();
    expect(t.readyState === 2 && t.errors.length === 2 && t.opens === 1,
      `after ${quiet} ms: readyState ${t.readyState}, errors ${JSON.stringify(t.errors)}, opens ${t.opens}`);
    const list = [...reqs.values()];
    expect(list.length === 2, `DevTools saw ${list.length} requests for /events/${subject} ` +
      `(expected the first GET and one reconnect, nothing after ${quiet} ms): ${JSON.stringify(list)}`);
    const [first, again] = list;
    expect(first.status === 200 && !first.lastEventId, `the first GET: ${JSON.stringify(first)}`);
    expect(again.status === 204 && again.lastEventId === endId,
      `the reconnect: ${JSON.stringify(again)}, expected 204 with Last-Event-ID ${endId}`);
    // the gateway's own account agrees: two requests for the subject, 200 then 204
    const acc = accessLines(g).filter((l) => l.path === `/events/${subject}`).map((l) => l.status);
    expect(JSON.stringify(acc) === '[200,204]', `the access log's statuses for /events/${subject}: ${JSON.stringify(acc)}`);
    log(`  ${got.length} progress events, end id ${endId}; reconnect with Last-Event-ID ${endId} -> 204, ` +
      `readyState CLOSED; no further request in ${quiet} ms (DevTools and the access log: 200, 204)`);
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } finally {
    await page.close();
    await kill(g.proc);
  }
}

/**
 * (d) Resume across a gateway restart with JetStream. A nats-server of its
 * own (-js, a store directory in the temp dir), the stream DEMO on demo.>
 * made before the gateway starts (it reads its streams at start-up), and a
 * gateway with --jetstream-streams DEMO: demo.s0 … demo.s<JS_N-1> are served
 * from JetStream and their ids are stream sequences. Numbered events flow on
 * every subject (JetStream publishes, acknowledged); the gateway is SIGKILLed
 * mid-flow and stays down for a while as publishing goes on into the stream,
 * then a new one starts on the same ports. Each EventSource must come back by
 * itself with its Last-Event-ID, get no `event: reset`, and hold 1..COUNT
 * exactly once in order, the ones published while no gateway ran included.
 */
async function testJetStreamRestartResumes(env) {
  const JS_N = 20;
  // per subject: COUNT / RATE = 67 s of publishing, so that the outage overlaps
  // it even when a loaded machine makes the waits before the kill take tens of
  // seconds (loaded runs needed 28 s, then over 40 s, from the first publish to
  // the restart). COUNT stays within the page's 1,000 recent events per stream.
  const COUNT = 1000;
  const RATE = 15;
  const DOWN_MS = 2500;     // no gateway at all for this long
  const STREAM = 'DEMO';
  const streamSpec = `${STREAM}:demo.>`;
  const storeDir = path.join(env.tmp, 'jetstream');
  fs.mkdirSync(storeDir, { recursive: true });
  let nats, g, page, errors;
  const pubs = [];
  try {
    nats = await startNats(['-js', '--store_dir', storeDir]);
    const mk = start(env.pub, ['--nats', nats.url, '--stream', streamSpec], 'sluice-pub --stream');
    const mkr = await Promise.race([mk.exited, sleep(10_000).then(() => null)]);
    expect(mkr && mkr.code === 0, `sluice-pub --stream ${streamSpec} failed: ${mkr ? JSON.stringify(mkr) : 'timeout'} ${tail(mk.out, 5)}`);
    const jsArgs = ['--jetstream-streams', STREAM];
    g = await startSluice(env, undefined, { nats, args: jsArgs });
    log(`  JetStream nats-server on ${nats.port}, stream ${streamSpec}; sluice ${jsArgs.join(' ')} on https ${g.tls}`);

    ({ page, errors } = await openDemo(env.ctx, `${g.origin}/?n=${JS_N}&mode=own`));
    await waitOpen(page, JS_N, 20_000, `${JS_N} streams to open`);
    for (let i = 0; i < JS_N; i++) {
      pubs.push(publishNumbered(env, `demo.s${i}`, { count: COUNT, rate: RATE, nats, stream: streamSpec }));
    }
    // the publishers are paced: they cannot finish before COUNT / RATE seconds
    const pubDeadline = Date.now() + (COUNT / RATE) * 1000 + 45_000;
    await waitUntil(async () => (await streams(page)).every((st) => st.events >= 20), 30_000, 'the flow to reach every stream');

    const m0 = await metrics(g);
    const old = g;
    process.kill(old.proc.pid, 'SIGKILL');
    await Promise.race([old.proc.exited, sleep(5000)]);
    expect(old.proc.done, 'sluice did not die on SIGKILL');
    await waitUntil(async () => (await summary(page)).open === 0, 10_000, 'the page to see every stream drop');
    const atDrop = (await streams(page)).map((st) => Number(st.lastData));
    await sleep(DOWN_MS);
    expect(pubs.every((p) => !p.done), 'a publisher finished while no gateway ran: the outage did not overlap publishing');
    g = await startSluice(env, { tls: old.tls, plain: old.plain, admin: old.admin }, { nats, args: jsArgs });
    log(`  sluice SIGKILLed at ${Math.min(...atDrop)}..${Math.max(...atDrop)} events per stream, ` +
      `down ${DOWN_MS / 1000} s while publishing went on, restarted on the same ports`);

    await waitUntil(async () => {
      const x = await summary(page);
      return x.open === JS_N && x.reconnects >= JS_N;
    }, 20_000, `all ${JS_N} streams to reconnect to the new gateway`);
    for (const p of pubs) {
      const r = await Promise.race([p.exited, sleep(Math.max(0, pubDeadline - Date.now())).then(() => null)]);
      expect(r && r.code === 0, `${p.label} did not finish: ${r ? JSON.stringify(r) : 'timeout'} ${tail(p.out, 5)}`);
    }
    await waitUntil(async () => (await streams(page)).every((st) => st.lastData === String(COUNT)), 15_000,
      'every stream to receive the last numbered event');
    await sleep(300); // a duplicate or a late reset would arrive now
    const all = await streams(page);
    for (const st of all) {
      expect(st.resets === 0, `stream #${st.i} got ${st.resets} reset(s): ` +
        JSON.stringify(st.recent.filter((e) => e.event === 'reset').map((e) => e.data)));
      expect(st.reconnects >= 1, `stream #${st.i} never reconnected`);
      expectNumbered(datas(st), COUNT, `stream #${st.i}`);
      // ids are JetStream stream sequences: small, increasing, shared by all subjects of the stream
      const ids = st.recent.map((e) => Number(e.id));
      ids.forEach((id, k) => expect(Number.isInteger(id) && id > 0 && id <= COUNT * JS_N && (k === 0 || id > ids[k - 1]),
        `stream #${st.i}: id ${JSON.stringify(st.recent[k].id)} after ${k ? st.recent[k - 1].id : 'none'} is not a stream sequence`));
      expect(atDrop[st.i] < COUNT - 20, `stream #${st.i} had ${atDrop[st.i]} events before the restart: too few after it to tell`);
    }
    const m1 = await metrics(g);
    const withId = m1.sluice_streams_last_event_id_total;
    const resets = m1['sluice_resumes_total{result="reset"}'];
    const replayed = m1.sluice_jetstream_replayed_events_total;
    expect(withId >= JS_N, `only ${withId} streams came back to the new gateway with a Last-Event-ID`);
    expect(resets === 0, `the new gateway sent ${resets} resets`);
    // what was published while no gateway ran reached the page by a JetStream replay
    const minDown = JS_N * Math.floor((DOWN_MS / 1000) * RATE * 0.5);
    expect(replayed >= minDown, `the new gateway replayed ${replayed} events from JetStream, expected at least ${minDown}`);
    log(`  all ${JS_N} streams resumed on the new gateway with no reset (before the kill: ` +
      `${m0['sluice_resumes_total{result="reset"}']} resets), each has 1..${COUNT} exactly once with stream-sequence ids; ` +
      `${replayed} events replayed from JetStream in ${m1.sluice_jetstream_replays_total} replays ` +
      `for ${m1.sluice_jetstream_replay_requests_total} requests`);
    env.shots.push(await screenshot(env, page, 'browser-jetstream-restart.png'));
    expect(!errors.length, `page errors: ${errors.join('; ')}`);
  } catch (e) {
    if (g) log(`JetStream sluice stderr (tail):\n${tail(g.proc.out)}`);
    throw e;
  } finally {
    for (const p of pubs) await kill(p);
    if (page) await page.close();
    if (g) await kill(g.proc);
    if (nats) await kill(nats.proc);
  }
}

// ---------------------------------------------------------------------------

async function main() {
  const chromePath = process.env.SLUICE_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(chromePath)) {
    console.log(`SKIP: ${chromePath} is missing (Debian package chromium: scripts/deps.sh --browser)`);
    return SKIP;
  }
  let chromium;
  try {
    ({ chromium } = await import(path.join(HERE, 'node_modules', 'playwright-core', 'index.mjs')));
  } catch (e) {
    console.log(`SKIP: playwright-core is not installed (cd tests/browser && npm ci): ${e.message}`);
    return SKIP;
  }

  const env = { shots: [] };
  env.sluice = tool('SLUICE_BIN', 'sluice');
  env.pub = tool('SLUICE_PUB', 'sluice-pub');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-browser-'));
  tempDirs.push(tmp);
  env.tmp = tmp;
  env.starts = 0;
  env.out = process.env.SLUICE_BROWSER_OUT || path.join(os.tmpdir(), 'sluice-browser-out');
  fs.mkdirSync(env.out, { recursive: true });
  const certs = path.join(tmp, 'certs');
  const mk = spawnSync('sh', [path.join(SRC, 'certs', 'make-dev-cert.sh'), certs], { encoding: 'utf8', timeout: 30_000 });
  expect(mk.status === 0, `make-dev-cert.sh failed: ${mk.stderr}`);
  env.cert = path.join(certs, 'server.pem');
  env.key = path.join(certs, 'server.key');

  env.nats = await startNats();
  env.nc = await Nats.connect(env.nats.port);
  env.g = await startSluice(env);
  log(`nats-server on ${env.nats.port}; sluice on https ${env.g.tls}, plain ${env.g.plain}, admin ${env.g.admin}`);

  try {
    env.ctx = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      headless: true,
      executablePath: chromePath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--ignore-certificate-errors',
        '--disable-dev-shm-usage'],
      ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    });
  } catch (e) {
    console.log(`SKIP: Chromium (${chromePath}) does not start here: ${e.message.split('\n')[0]}`);
    return SKIP;
  }
  log(`Chromium ${env.ctx.browser() ? env.ctx.browser().version() : ''} started`);

  const tests = [
    ['h2: 200 EventSources on one connection, each receives its events', testH2OneConnection],
    ['HTTP/1.1 cleartext: six-connection starvation', testH1Starvation],
    ['network drop: streams resume with Last-Event-ID, no gap', testNetworkDropResumes],
    ['page reconnect with ?last_event_id= mid-flow: no gap', testPageReconnectNoGap],
    ['gateway SIGKILL + restart on the same ports: reset reported, live events continue', testRestartResets],
    ['JetStream: gateway SIGKILL + restart on the same ports: every stream resumes, no reset, no gap', testJetStreamRestartResumes],
    ['chat panel: a POST stream killed mid-answer resumes with every token once; Stop ends it', testChatPanel],
    ['chat panel, JetStream: gateway SIGKILL mid-answer, restart: the answer resumes, every token once', testChatGatewayKilled],
    ['finished job: progress events, the end, 204 on the reconnect, then no further request', testFinishedJobStops],
  ];
  let passed = 0, failed = 0;
  // SLUICE_BROWSER_ONLY=REGEX runs the tests whose names match (by hand, while working on one).
  const only = process.env.SLUICE_BROWSER_ONLY ? new RegExp(process.env.SLUICE_BROWSER_ONLY) : null;
  for (const [name, fn] of tests.filter(([n]) => !only || only.test(n))) {
    log(`RUN  ${name}`);
    try {
      await fn(env);
      passed++;
      log(`PASS ${name}`);
    } catch (e) {
      failed++;
      log(`FAIL ${name}: ${e instanceof TestFailure ? e.message : e.stack}`);
      log(`sluice stderr (tail):\n${tail(env.g && env.g.proc.out)}`);
      if (env.g && env.g.proc.done) {
        // a later test needs a gateway; a dead one gets replaced on new ports
        env.g = await startSluice(env).catch(() => env.g);
      }
    }
  }
  await env.ctx.close();
  for (const f of env.shots) console.log(`screenshot: ${f}`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

async function cleanup() {
  for (const p of [...procs]) await kill(p);
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
}

const watchdog = setTimeout(async () => {
  console.log(`FAIL: watchdog: the browser suite ran longer than ${WATCHDOG_MS / 1000} s`);
  console.log('browser: 0 passed, 1 failed');
  await cleanup();
  process.exit(1);
}, WATCHDOG_MS);

let code = 1;
try {
  code = await main();
} catch (e) {
  console.log(`FAIL: ${e instanceof TestFailure ? e.message : e.stack}`);
  console.log('browser: 0 passed, 1 failed');
  code = 1;
}
clearTimeout(watchdog);
await cleanup();
process.exit(code);
