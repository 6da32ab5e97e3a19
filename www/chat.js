/*
 * sluice demo page, chat panel: one request stream, started by a POST,
 * that survives a lost connection.
 *
 * Send POSTs an OpenAI-style chat-completion request to the gateway's
 * request route (POST /v1/chat/completions, which scripts/demo maps to the
 * NATS service subject llm.chat, answered by tools/sluice-llm) with fetch,
 * and reads the text/event-stream answer as it arrives (fetch, not
 * EventSource: EventSource cannot POST). The answer's Content-Location
 * header names the stream's resumable URL.
 *
 * "Kill connection & resume" aborts the fetch mid-answer (the generation
 * goes on: a disconnect does not stop it), then GETs the Content-Location
 * URL with Last-Event-ID set to the id of the last event received; the
 * gateway replays what was missed and the answer continues. An unexpected
 * end (the gateway restarted, the network dropped) resumes the same way by
 * itself, after a pause that doubles per failure in a row (a gateway that
 * is restarting). A 204 means the stream had already finished. "Stop" sends DELETE
 * to the same URL: the gateway tells the service, which ends the answer
 * with its last chunk and [DONE].
 *
 * Every token exactly once: sluice-llm's answer is a function of the
 * prompt (the lorem word list from an FNV-1a start, see tools/sluice-llm.c),
 * so the page checks the tokens it showed against it and says whether a
 * token was lost or doubled.
 *
 * window.sluiceChat exposes the state and the actions for the browser
 * tests and the console.
 */
(function () {
  'use strict';

  var ROUTE = '/v1/chat/completions';
  var AUTO_RESUME_MAX = 6;      /* unexpected ends in a row before giving up */
  var AUTO_RESUME_MS = 500;     /* the first pause; it doubles per failure in a row (~30 s in all) */
  var STARVED_MS = 3000;        /* no response head by then: say why it may wait */

  var LOREM = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ' +
    'incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud ' +
    'exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in ' +
    'reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint').split(' ');

  function $(id) { return document.getElementById(id); }

  var ui = {
    form: $('chat-form'), prompt: $('chat-prompt'), tokens: $('chat-tokens'),
    send: $('chat-send'), kill: $('chat-kill'), stop: $('chat-stop'),
    answer: $('chat-answer'), status: $('chat-status'), check: $('chat-check')
  };
  if (!ui.form) return;

  var st = {
    phase: 'idle',      /* idle | streaming | resuming | done | failed */
    prompt: '', want: 0,
    url: null,          /* the stream's Content-Location, absolute */
    lastId: '',
    tokens: [],         /* token texts in arrival order */
    resumes: 0, autoResumes: 0, events: 0,
    finish: null,       /* the finish_reason seen */
    ctl: null,          /* the AbortController of the fetch in flight */
    gen: 0              /* bumped per fetch, so a stale reader stops */
  };

  function fnv1a(s) {
    var bytes = new TextEncoder().encode(s), h = 2166136261;
    for (var i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 16777619) >>> 0;
    return h;
  }

  function expected(prompt, n) {
    var seed = fnv1a(prompt), out = [];
    for (var i = 0; i < n; i++) out.push(LOREM[(seed + i) % LOREM.length] + ' ');
    return out;
  }

  function say(text, kind) {
    ui.status.textContent = text;
    ui.status.dataset.kind = kind || '';
  }

  function buttons() {
    var live = st.phase === 'streaming' || st.phase === 'resuming';
    ui.send.disabled = live;
    ui.kill.disabled = !live || !st.url;
    ui.stop.disabled = !live || !st.url;
  }

  /* Compares the tokens shown with sluice-llm's answer: a prefix when the
   * answer was stopped early, the whole answer otherwise. */
  function verify() {
    var want = expected(st.prompt, st.want), got = st.tokens, i;
    for (i = 0; i < got.length && i < want.length; i++) if (got[i] !== want[i]) break;
    var whole = st.stopped || st.phase !== 'done' || got.length === want.length;
    var ok = i === got.length && whole;
    ui.check.dataset.kind = ok ? 'ok' : 'bad';
    ui.check.textContent = ok
      ? '✓ ' + got.length + ' tokens, each exactly once' + (st.resumes ? ' across ' + st.resumes + ' resume' + (st.resumes > 1 ? 's' : '') : '')
      : i < got.length
        ? '✗ token ' + (i + 1) + ' is ' + JSON.stringify(got[i]) + ', the answer has ' + JSON.stringify(want[i])
        : '✗ ' + got.length + ' of ' + want.length + ' tokens arrived';
    return ok;
  }

  function onEvent(ev) {
    st.events++;
    if (ev.id) st.lastId = ev.id;
    if (ev.event === 'error') {
      st.phase = 'failed';
      say('the stream ended with an error: ' + ev.data, 'bad');
      return;
    }
    if (ev.event === 'reset') {
      say('the gateway no longer has this stream\'s history (event: reset)', 'warn');
      return;
    }
    if (ev.data === '[DONE]') {
      st.phase = 'done';
      return;
    }
    var chunk;
    try { chunk = JSON.parse(ev.data); } catch (e) { return; }
    var choice = chunk.choices && chunk.choices[0];
    if (!choice) return;
    if (choice.finish_reason) st.finish = choice.finish_reason;
    var text = choice.delta && choice.delta.content;
    if (text) {
      st.tokens.push(text);
      var span = document.createElement('span');
      span.textContent = text;
      if (st.resumedAt === st.tokens.length - 1) span.className = 'resumed';
      ui.answer.appendChild(span);
      ui.answer.scrollTop = ui.answer.scrollHeight;
    }
  }

  /* Reads an event stream to its end, calling onEvent per event. Returns
   * false when a newer fetch replaced this one. */
  async function read(resp, gen) {
    var reader = resp.body.getReader(), dec = new TextDecoder(), buf = '';
    var ev = { id: '', event: '', data: [] };
    for (;;) {
      var r = await reader.read();
      if (gen !== st.gen) { reader.cancel().catch(function () {}); return false; }
      if (r.done) return true;
      buf += dec.decode(r.value, { stream: true });
      var m;
      /* One line at a time; CRLF, LF and CR all end a line. A lone CR at the
       * end of the buffer waits: an LF may follow in the next read. */
      while ((m = /\r\n|\n|\r(?!$)/.exec(buf))) {
        var line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (ev.data.length) onEvent({ id: ev.id, event: ev.event, data: ev.data.join('\n') });
          ev = { id: '', event: '', data: [] };
          continue;
        }
        if (line[0] === ':') continue;
        var c = line.indexOf(':'), field = c < 0 ? line : line.slice(0, c);
        var value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'data') ev.data.push(value);
        else if (field === 'event') ev.event = value;
        else if (field === 'id') ev.id = value;
      }
    }
  }

  /* Over HTTP/1.1 the browser allows six connections per host, and the
   * page's EventSources above may hold them all: the request then waits. */
  function warnIfStarved(gen) {
    return setTimeout(function () {
      if (gen !== st.gen) return;
      var proto = (performance.getEntriesByType('navigation')[0] || {}).nextHopProtocol || '';
      say('no answer yet' + (proto === 'http/1.1'
        ? ': over HTTP/1.1 the streams above may hold all six connections the browser ' +
          'allows per host; close them ("Close all") or use the https (HTTP/2) page'
        : ''), 'warn');
    }, STARVED_MS);
  }

  async function run(req) {
    var gen = ++st.gen, ctl = new AbortController();
    st.ctl = ctl;
    buttons();
    var starved = warnIfStarved(gen);
    try {
      var resp = await fetch(req.url, { method: req.method, headers: req.headers,
                                        body: req.body, signal: ctl.signal, cache: 'no-store' });
      clearTimeout(starved);
      if (gen !== st.gen) return;
      if (resp.status === 204) {
        st.phase = 'done';
        say('the stream had already finished (204): nothing was missed');
      } else if (!resp.ok) {
        var text = await resp.text().catch(function () { return ''; });
        st.phase = 'failed';
        say(req.method + ' answered ' + resp.status + ': ' + text.slice(0, 200), 'bad');
      } else {
        var loc = resp.headers.get('content-location');
        if (loc) st.url = new URL(loc, location.href).href;
        buttons();
        if (req.method === 'POST') say('streaming from ' + (st.url || '(no Content-Location)'));
        else say('resumed after event ' + req.lastId + ': the gateway replays what was missed');
        st.phase = 'streaming';
        if (!(await read(resp, gen))) return;
        if (st.phase === 'streaming') return unexpectedEnd('the stream ended before [DONE]');
      }
    } catch (e) {
      clearTimeout(starved);
      if (gen !== st.gen) return;
      if (ctl.signal.aborted) return;
      return unexpectedEnd(String(e && e.message || e));
    }
    if (st.phase === 'done') {
      st.autoResumes = 0;
      say('done: ' + st.tokens.length + ' tokens' + (st.finish ? ', finish_reason ' + st.finish : '') +
          (st.resumes ? ', ' + st.resumes + ' resume' + (st.resumes > 1 ? 's' : '') : ''), 'ok');
    }
    verify();
    buttons();
  }

  function unexpectedEnd(why) {
    if (!st.url || st.autoResumes >= AUTO_RESUME_MAX) {
      st.phase = 'failed';
      say('the stream broke: ' + why, 'bad');
      buttons();
      return;
    }
    var pause = AUTO_RESUME_MS << st.autoResumes;
    st.autoResumes++;
    st.phase = 'resuming';
    say('the stream broke (' + why + '); resuming in ' + pause + ' ms', 'warn');
    setTimeout(resume, pause);
  }

  function resume() {
    if (!st.url) return;
    st.resumes++;
    st.resumedAt = st.tokens.length;
    st.phase = 'resuming';
    var headers = { accept: 'text/event-stream' };
    if (st.lastId) headers['last-event-id'] = st.lastId;
    return run({ url: st.url, method: 'GET', headers: headers, lastId: st.lastId || '(none)' });
  }

  function send(prompt, n) {
    if (st.ctl) st.ctl.abort();
    Object.assign(st, { phase: 'streaming', prompt: prompt, want: n, url: null, lastId: '',
                        tokens: [], resumes: 0, autoResumes: 0, events: 0, finish: null,
                        stopped: false, resumedAt: -1 });
    ui.answer.textContent = '';
    ui.check.textContent = '';
    ui.check.dataset.kind = 'idle';
    say('POST ' + ROUTE + '…');
    var body = JSON.stringify({ model: 'sluice-llm', stream: true, max_tokens: n,
                                messages: [{ role: 'user', content: prompt }] });
    return run({ url: ROUTE, method: 'POST', body: body,
                 headers: { 'content-type': 'application/json', accept: 'text/event-stream' } });
  }

  /* Drops the connection mid-answer and resumes from the last event's id. */
  function kill() {
    if (!st.url || !st.ctl) return;
    st.gen++;           /* the old reader stops at its next read */
    st.ctl.abort();
    say('connection killed after ' + st.tokens.length + ' tokens (event id ' + st.lastId + ')', 'warn');
    return resume();
  }

  async function stop() {
    if (!st.url) return;
    st.stopped = true;
    try {
      var resp = await fetch(st.url, { method: 'DELETE', cache: 'no-store' });
      say('DELETE answered ' + resp.status + '; the service ends the answer', resp.ok ? '' : 'bad');
    } catch (e) {
      say('DELETE failed: ' + e, 'bad');
    }
  }

  ui.form.addEventListener('submit', function (e) {
    e.preventDefault();
    var n = Math.max(1, Math.min(4096, parseInt(ui.tokens.value, 10) || 1));
    send(ui.prompt.value, n);
  });
  ui.kill.addEventListener('click', kill);
  ui.stop.addEventListener('click', stop);
  buttons();

  window.sluiceChat = { state: st, send: send, kill: kill, stop: stop, verify: verify,
                        expected: expected };
})();
