/*
 * sluice demo page: opens N EventSource streams on this page's origin and
 * shows them live.
 *
 * Each stream is one `GET /events/<subject>` EventSource, on its own subject
 * (demo.s0 … demo.s<N-1>) or all on one shared subject. Over https the
 * browser multiplexes them on one HTTP/2 connection; over the gateway's
 * plain HTTP/1.1 listener each needs a connection of its own and the browser
 * allows six per host, so the rest wait: the page counts them and says so.
 *
 * Reconnects are the browser's: EventSource comes back after the gateway's
 * `retry:` hint and sends Last-Event-ID itself. The page only steps in when
 * the browser gives up (an HTTP error closes an EventSource for good): it
 * reopens that stream with ?last_event_id= after a pause. "Reconnect all"
 * does the same on purpose, to show resume without a gap.
 *
 * Events update plain counters at once; the DOM is redrawn from them on a
 * timer (not per event), so a busy stream costs a counter increment, and the
 * redraw also runs in a background tab where requestAnimationFrame would
 * not.
 *
 * window.sluiceDemo exposes the counters and a few actions for the browser
 * tests (tests/browser) and for anyone curious in the console.
 */
(function () {
  'use strict';

  var RECENT_MAX = 1000;        /* events kept per stream (id, type, data) */
  var LOG_ROWS = 14;            /* rows in "Latest events" */
  var REOPEN_CLOSED_MS = 2000;  /* first pause before reopening a stream the browser closed */
  var REOPEN_MAX_MS = 60000;    /* the pause doubles per failure in a row, up to this */
  var REDRAW_MS = 150;
  var TICKER_MS = 200;
  var PUBLISH_PARALLEL = 8;     /* POSTs in flight for "publish to every stream" */
  var BUCKET_MS = 100;          /* events/s is summed over ten 100 ms buckets */

  function $(id) { return document.getElementById(id); }

  var ui = {
    proto: $('proto'), protoValue: $('proto-value'),
    banner: $('banner'), bannerTitle: $('banner-title'), bannerText: $('banner-text'),
    open: $('st-open'), of: $('st-of'), pending: $('st-pending'), pendingBox: $('stat-pending'),
    rate: $('st-rate'), events: $('st-events'), reconnects: $('st-reconnects'), resets: $('st-resets'),
    grid: $('grid'), log: $('log'),
    form: $('streams-form'), n: $('n'), shared: $('shared'), lastSubject: $('last-subject'),
    resume: $('resume'), stop: $('stop'),
    pubForm: $('publish-form'), pubSubject: $('pub-subject'), pubEvent: $('pub-event'),
    pubData: $('pub-data'), pubAll: $('pub-all'), ticker: $('ticker'), pubStatus: $('pub-status')
  };

  var state = {
    protocol: '',
    mode: 'own',
    sharedSubject: 'demo.ticks',
    streams: [],
    eventNames: ['message', 'tick'],  /* named events need their own listener */
    totals: { events: 0, reconnects: 0, resets: 0 },
    buckets: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    slot: 0,
    log: [],
    logDirty: true,
    pubSubjectTouched: false,
    tickerTimer: 0,
    tickerBusy: false,
    tickerCount: 0,
    probing: false,
    refusal: ''         /* the gateway's answer to the last refused stream */
  };

  /* ---- protocol ------------------------------------------------------ */

  function detectProtocol() {
    var nav = performance.getEntriesByType('navigation')[0];
    var p = nav && nav.nextHopProtocol;
    if (!p) {
      var res = performance.getEntriesByType('resource');
      for (var i = 0; i < res.length && !p; i++) p = res[i].nextHopProtocol;
    }
    return p || '';
  }

  function protocolKind(p) {
    if (p === 'h2' || p === 'h3') return 'h2';
    if (p.indexOf('http/1') === 0) return 'h1';
    return 'unknown';
  }

  function showProtocol() {
    state.protocol = detectProtocol();
    var names = { h2: 'HTTP/2 (h2)', h3: 'HTTP/3 (h3)', 'http/1.1': 'HTTP/1.1', 'http/1.0': 'HTTP/1.0' };
    ui.protoValue.textContent = names[state.protocol] || state.protocol || 'unknown';
    ui.proto.dataset.kind = protocolKind(state.protocol);
  }

  /* ---- events/s -------------------------------------------------------- */

  function advance(now) {
    var slot = Math.floor(now / BUCKET_MS);
    if (slot - state.slot >= state.buckets.length) {
      state.buckets.fill(0);
    } else {
      for (var s = state.slot + 1; s <= slot; s++) state.buckets[s % state.buckets.length] = 0;
    }
    state.slot = slot;
  }

  function countEvent(now) {
    advance(now);
    state.buckets[state.slot % state.buckets.length]++;
  }

  function ratePerSecond() {
    advance(performance.now());
    var sum = 0;
    for (var i = 0; i < state.buckets.length; i++) sum += state.buckets[i];
    return sum * 1000 / (BUCKET_MS * state.buckets.length);
  }

  /* ---- streams --------------------------------------------------------- */

  function streamUrl(st, resumeId) {
    var url = '/events/' + encodeURIComponent(st.subject);
    if (resumeId) url += '?last_event_id=' + encodeURIComponent(resumeId);
    return url;
  }

  function openStream(st, resumeId) {
    clearTimeout(st.reopenTimer);
    var es = new EventSource(streamUrl(st, resumeId));
    st.es = es;
    st.state = st.everOpened ? 'retrying' : 'pending';
    st.dirty = true;
    es.onopen = function () {
      if (es !== st.es) return;
      if (st.everOpened) {
        st.reconnects++;
        state.totals.reconnects++;
      }
      st.everOpened = true;
      st.opens++;
      st.failures = 0;
      st.state = 'open';
      st.dirty = true;
    };
    es.onerror = function () {
      if (es !== st.es) return;
      st.dirty = true;
      if (es.readyState === EventSource.CLOSED) {
        /* an HTTP error (a bad subject, a limit): the browser will not retry
           this one, so the page does, backing off so as not to hammer */
        st.state = 'closed';
        probeRefusal(st);
        var pause = Math.min(REOPEN_MAX_MS, REOPEN_CLOSED_MS * Math.pow(2, st.failures++));
        st.reopenTimer = setTimeout(function () {
          if (es === st.es) openStream(st, st.lastId);
        }, pause * (1 + Math.random()));
      } else {
        st.state = 'retrying';
      }
    };
    var handler = function (e) { onEvent(st, es, e); };
    st.handler = handler;
    for (var i = 0; i < state.eventNames.length; i++) es.addEventListener(state.eventNames[i], handler);
    es.addEventListener('reset', handler);
  }

  function onEvent(st, es, e) {
    if (es !== st.es) return;
    var now = performance.now();
    if (e.lastEventId) st.lastId = e.lastEventId;
    st.recent.push({ id: e.lastEventId, event: e.type, data: e.data });
    if (st.recent.length > RECENT_MAX) st.recent.splice(0, st.recent.length - RECENT_MAX);
    if (e.type === 'reset') {
      /* the gateway could not resume this stream: counted apart from events */
      st.resets++;
      state.totals.resets++;
    } else {
      st.events++;
      st.lastData = e.data;
      st.lastType = e.type;
      state.totals.events++;
      countEvent(now);
    }
    st.dirty = true;
    st.hit = true;
    state.log.push({ at: new Date(), i: st.i, subject: st.subject, type: e.type, id: e.lastEventId, data: e.data });
    if (state.log.length > LOG_ROWS) state.log.shift();
    state.logDirty = true;
  }

  /* EventSource does not say why it was refused; one plain request for the
     same URL does (the gateway answers errors with a one-line reason). */
  function probeRefusal(st) {
    if (state.probing) return;
    state.probing = true;
    var ctl = new AbortController();
    fetch(streamUrl(st, ''), { signal: ctl.signal, cache: 'no-store' }).then(function (res) {
      if (res.ok) {
        ctl.abort();
        return;
      }
      return res.text().then(function (body) {
        state.refusal = res.status + ' ' + body.trim().slice(0, 200);
      });
    }).catch(function () {}).then(function () {
      setTimeout(function () { state.probing = false; }, 5000);
    });
  }

  function listenFor(name) {
    if (!name || state.eventNames.indexOf(name) >= 0 || name === 'reset') return;
    state.eventNames.push(name);
    state.streams.forEach(function (st) {
      if (st.es) st.es.addEventListener(name, st.handler);
    });
  }

  function closeAll() {
    state.streams.forEach(function (st) {
      clearTimeout(st.reopenTimer);
      if (st.es) st.es.close();
      st.es = null;
    });
    state.streams = [];
  }

  function subjectFor(i) {
    return state.mode === 'shared' ? state.sharedSubject : 'demo.s' + i;
  }

  function start(opts) {
    opts = opts || {};
    var n = Math.max(1, Math.min(1000, parseInt(opts.n != null ? opts.n : ui.n.value, 10) || 200));
    state.mode = (opts.mode || formMode()) === 'shared' ? 'shared' : 'own';
    state.sharedSubject = (opts.subject || ui.shared.value || 'demo.ticks').trim();
    ui.n.value = n;
    ui.shared.value = state.sharedSubject;
    setFormMode(state.mode);
    closeAll();
    state.refusal = '';
    state.totals = { events: 0, reconnects: 0, resets: 0 };
    state.buckets.fill(0);
    state.log = [];
    state.logDirty = true;
    ui.grid.textContent = '';
    var frag = document.createDocumentFragment();
    for (var i = 0; i < n; i++) {
      var cell = document.createElement('div');
      cell.className = 'cell';
      cell.dataset.state = 'pending';
      var idx = document.createElement('span');
      idx.className = 'idx';
      idx.textContent = i;
      var cnt = document.createElement('span');
      cnt.className = 'cnt';
      cell.appendChild(idx);
      cell.appendChild(cnt);
      frag.appendChild(cell);
      state.streams.push({
        i: i, subject: subjectFor(i), es: null, handler: null, state: 'pending',
        everOpened: false, opens: 0, reconnects: 0, events: 0, resets: 0,
        lastId: '', lastData: '', lastType: '', recent: [], failures: 0,
        cell: cell, cnt: cnt, dirty: true, hit: false, reopenTimer: 0
      });
    }
    ui.grid.appendChild(frag);
    state.streams.forEach(function (st) { openStream(st, ''); });
    syncPublishSubject();
    rememberSettings(n);
    redraw();
  }

  function stop() {
    closeAll();
    ui.grid.textContent = '';
    redraw();
  }

  /* Closes every stream and reopens it where it was: the gateway replays
     from its history whatever was published in between. */
  function reconnectAll() {
    state.streams.forEach(function (st) {
      if (st.es) st.es.close();
      st.es = null;
      openStream(st, st.lastId);
    });
    redraw();
  }

  function counts() {
    var c = { total: state.streams.length, open: 0, pending: 0, retrying: 0, closed: 0, withReset: 0 };
    state.streams.forEach(function (st) {
      c[st.state]++;
      if (st.resets) c.withReset++;
    });
    return c;
  }

  /* ---- drawing --------------------------------------------------------- */

  function setBanner(kind, title, text) {
    ui.banner.dataset.kind = kind;
    ui.bannerTitle.textContent = title;
    ui.bannerText.textContent = text;
  }

  function drawBanner(c) {
    var kind = protocolKind(state.protocol);
    var resetNote = c.withReset
      ? ' ' + c.withReset + ' stream' + (c.withReset === 1 ? '' : 's') +
        ' got event: reset (the gateway restarted or its history ran out): an application would refetch its state now; live events keep coming.'
      : '';
    if (c.total === 0) {
      setBanner('idle', 'No streams open.', 'Choose how many and press Open streams.');
    } else if (kind === 'h1' && c.pending > 0) {
      setBanner('bad', 'HTTP/1.1: only ' + c.open + ' of ' + c.total + ' streams are open, ' +
        c.pending + ' are waiting for a connection.',
        'Each EventSource holds a whole HTTP/1.1 connection and the browser allows six per host, ' +
        'so the rest starve, and so does anything else this page asks for, publishing included. ' +
        "Load this page from the gateway's https:// address and every stream shares one HTTP/2 connection.");
    } else if (c.closed > 0) {
      setBanner('bad', c.closed + ' of ' + c.total + ' streams were refused by the gateway' +
        (state.refusal ? ': ' + state.refusal : '.'),
        'An HTTP error ends an EventSource for good (a bad subject, a limit, the gateway unavailable); ' +
        'the page reopens these with a growing pause.');
    } else if (c.retrying > 0) {
      setBanner('warn', 'Reconnecting: ' + c.retrying + ' of ' + c.total +
        ' streams lost their connection.',
        'Each comes back with Last-Event-ID and the gateway replays what it missed, ' +
        'or says event: reset when it has no history for it.' + resetNote);
    } else if (c.pending > 0) {
      setBanner('info', 'Opening: ' + c.open + ' of ' + c.total + ' streams open, ' + c.pending + ' waiting.',
        c.total > 256 && kind === 'h2'
          ? 'Chromium runs at most 256 streams on one HTTP/2 connection; the rest wait for a free slot.'
          : '');
    } else if (kind === 'h2') {
      setBanner(c.withReset ? 'info' : 'ok', 'All ' + c.total + ' streams are open on one ' +
        (state.protocol === 'h3' ? 'HTTP/3' : 'HTTP/2') + ' connection.',
        (c.withReset ? resetNote : 'Publish below, or from any NATS client, and watch the cells light up.'));
    } else {
      setBanner(c.withReset ? 'info' : 'ok', 'All ' + c.total + ' streams are open.', resetNote);
    }
  }

  function drawCells() {
    var hits = [];
    state.streams.forEach(function (st) {
      if (!st.dirty) return;
      st.dirty = false;
      var cell = st.cell;
      if (cell.dataset.state !== st.state) cell.dataset.state = st.state;
      if (st.events) cell.dataset.seen = '1';
      if (st.resets) cell.dataset.reset = '1';
      st.cnt.textContent = st.events ? String(st.events) : '';
      cell.title = '#' + st.i + '  ' + st.subject + '\n' + st.state + ', ' + st.events + ' events' +
        (st.reconnects ? ', ' + st.reconnects + ' reconnects' : '') +
        (st.resets ? ', ' + st.resets + ' resets' : '') +
        (st.lastId ? '\nlast id ' + st.lastId : '') +
        (st.events ? '\nlast data ' + st.lastData.slice(0, 80) : '');
      if (st.hit) {
        st.hit = false;
        hits.push(cell);
      }
    });
    if (hits.length) {
      /* restart the flash animation: one reflow for all cells, not one each */
      hits.forEach(function (cell) { cell.classList.remove('hit'); });
      void ui.grid.offsetWidth;
      hits.forEach(function (cell) { cell.classList.add('hit'); });
    }
  }

  function cellText(tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    td.title = text;
    tr.appendChild(td);
  }

  function pad(n, w) { n = String(n); while (n.length < w) n = '0' + n; return n; }

  function drawLog() {
    if (!state.logDirty) return;
    state.logDirty = false;
    ui.log.textContent = '';
    if (!state.log.length) {
      var tr0 = document.createElement('tr');
      tr0.className = 'empty';
      var td = document.createElement('td');
      td.colSpan = 5;
      td.textContent = 'nothing yet: publish something';
      tr0.appendChild(td);
      ui.log.appendChild(tr0);
      return;
    }
    for (var k = state.log.length - 1; k >= 0; k--) {
      var e = state.log[k];
      var tr = document.createElement('tr');
      cellText(tr, pad(e.at.getHours(), 2) + ':' + pad(e.at.getMinutes(), 2) + ':' +
        pad(e.at.getSeconds(), 2) + '.' + pad(e.at.getMilliseconds(), 3));
      cellText(tr, '#' + e.i + ' ' + e.subject);
      cellText(tr, e.type, e.type === 'reset' ? 'ev-reset' : '');
      cellText(tr, e.id || '', 'id');
      cellText(tr, e.data);
      ui.log.appendChild(tr);
    }
  }

  function redraw() {
    var c = counts();
    ui.open.textContent = c.open;
    ui.of.textContent = c.total ? 'of ' + c.total : '';
    ui.pending.textContent = c.pending;
    ui.pendingBox.dataset.hot = c.pending > 0 && protocolKind(state.protocol) === 'h1' ? '1' : '0';
    ui.rate.textContent = Math.round(ratePerSecond());
    ui.events.textContent = state.totals.events;
    ui.reconnects.textContent = state.totals.reconnects;
    ui.resets.textContent = state.totals.resets;
    drawBanner(c);
    drawCells();
    drawLog();
  }

  /* ---- publishing ------------------------------------------------------ */

  function setPubStatus(kind, text) {
    ui.pubStatus.dataset.kind = kind;
    ui.pubStatus.textContent = text;
  }

  /* Resolves to the HTTP status (202 when NATS took it). */
  function publish(subject, event, data) {
    var url = '/publish/' + encodeURIComponent(subject);
    if (event) {
      listenFor(event);
      url += '?event=' + encodeURIComponent(event);
    }
    return fetch(url, {
      method: 'POST',
      body: data,
      headers: { 'content-type': 'text/plain; charset=utf-8' },
      cache: 'no-store'
    }).then(function (res) {
      if (res.status === 202) return res.status;
      return res.text().then(function (body) {
        var err = new Error(res.status + ' ' + body.trim());
        err.status = res.status;
        throw err;
      });
    });
  }

  /* Warns when a request sits unanswered: over HTTP/1.1 it is queued behind
     streams that hold every connection. */
  function watchSlow(what) {
    return setTimeout(function () {
      setPubStatus('warn', what + ': still waiting for a free connection' +
        (protocolKind(state.protocol) === 'h1' ? ' (HTTP/1.1: the streams hold all six).' : '.'));
    }, 1000);
  }

  function onPublishSubmit(ev) {
    ev.preventDefault();
    var subject = ui.pubSubject.value.trim();
    var event = ui.pubEvent.value.trim();
    var t0 = performance.now();
    setPubStatus('', 'publishing to ' + subject + '…');
    var slow = watchSlow('publish to ' + subject);
    publish(subject, event, ui.pubData.value).then(function (status) {
      clearTimeout(slow);
      setPubStatus('ok', status + ' Accepted: handed to NATS on ' + subject + ' in ' +
        Math.round(performance.now() - t0) + ' ms.');
    }, function (err) {
      clearTimeout(slow);
      setPubStatus('bad', 'publish failed: ' + err.message);
    });
  }

  function onPublishAll() {
    var seen = {};
    var subjects = [];
    state.streams.forEach(function (st) {
      if (!seen[st.subject]) { seen[st.subject] = 1; subjects.push(st.subject); }
    });
    if (!subjects.length) {
      setPubStatus('warn', 'no streams open.');
      return;
    }
    var event = ui.pubEvent.value.trim();
    var data = ui.pubData.value;
    var next = 0, done = 0, failed = 0, t0 = performance.now();
    var slow = watchSlow('publish to every stream');
    setPubStatus('', 'publishing to ' + subjects.length + ' subjects…');
    function finish() {
      clearTimeout(slow);
      setPubStatus(failed ? 'bad' : 'ok', 'published to ' + (done - failed) + ' of ' + subjects.length +
        ' subjects in ' + Math.round(performance.now() - t0) + ' ms' + (failed ? ', ' + failed + ' failed.' : '.'));
    }
    function one() {
      if (next >= subjects.length) return;
      var s = subjects[next++];
      publish(s, event, data).catch(function () { failed++; }).then(function () {
        done++;
        if (done === subjects.length) finish();
        else one();
      });
    }
    for (var k = 0; k < PUBLISH_PARALLEL; k++) one();
  }

  function tick() {
    if (state.tickerBusy || !state.streams.length) return;
    var st = state.streams[Math.floor(Math.random() * state.streams.length)];
    state.tickerBusy = true;
    state.tickerCount++;
    publish(st.subject, '', 'tick ' + state.tickerCount + ' for stream #' + st.i).catch(function (err) {
      setPubStatus('bad', 'ticker: ' + err.message);
    }).then(function () { state.tickerBusy = false; });
  }

  function onTicker() {
    clearInterval(state.tickerTimer);
    state.tickerTimer = ui.ticker.checked ? setInterval(tick, TICKER_MS) : 0;
  }

  /* ---- form ------------------------------------------------------------ */

  function formMode() {
    var checked = ui.form.querySelector('input[name="mode"]:checked');
    return checked ? checked.value : 'own';
  }

  function setFormMode(mode) {
    var radio = ui.form.querySelector('input[name="mode"][value="' + mode + '"]');
    if (radio) radio.checked = true;
  }

  function syncPublishSubject() {
    if (state.pubSubjectTouched) return;
    ui.pubSubject.value = formMode() === 'shared' ? (ui.shared.value.trim() || 'demo.ticks') : 'demo.s0';
  }

  function rememberSettings(n) {
    var q = new URLSearchParams(location.search);
    q.set('n', n);
    q.set('mode', state.mode);
    q.set('subject', state.sharedSubject);
    history.replaceState(null, '', location.pathname + '?' + q.toString());
  }

  function onLastSubject() {
    var n = parseInt(ui.n.value, 10) || 1;
    ui.lastSubject.textContent = 'demo.s' + (n - 1);
  }

  /* ---- start ----------------------------------------------------------- */

  function init() {
    var q = new URLSearchParams(location.search);
    if (q.get('n')) ui.n.value = q.get('n');
    if (q.get('subject')) ui.shared.value = q.get('subject');
    setFormMode(q.get('mode') === 'shared' ? 'shared' : 'own');
    (q.get('events') || '').split(',').forEach(function (name) { listenFor(name.trim()); });
    onLastSubject();
    syncPublishSubject();
    showProtocol();

    ui.form.addEventListener('submit', function (ev) { ev.preventDefault(); start(); });
    ui.form.addEventListener('change', syncPublishSubject);
    ui.n.addEventListener('input', onLastSubject);
    ui.shared.addEventListener('input', syncPublishSubject);
    ui.shared.addEventListener('focus', function () { setFormMode('shared'); syncPublishSubject(); });
    ui.resume.addEventListener('click', reconnectAll);
    ui.stop.addEventListener('click', stop);
    ui.pubForm.addEventListener('submit', onPublishSubmit);
    ui.pubSubject.addEventListener('input', function () { state.pubSubjectTouched = true; });
    ui.pubAll.addEventListener('click', onPublishAll);
    ui.ticker.addEventListener('change', onTicker);

    setInterval(redraw, REDRAW_MS);
    /* resource entries (and so the protocol) may settle after load */
    window.addEventListener('load', showProtocol);
    if (q.get('autostart') !== '0') start();
    else redraw();
  }

  window.sluiceDemo = {
    start: start,
    stop: stop,
    reconnectAll: reconnectAll,
    publish: publish,
    summary: function () {
      var c = counts();
      drawBanner(c); /* so that the banner matches these counts */
      return {
        protocol: state.protocol, mode: state.mode, total: c.total, open: c.open, pending: c.pending,
        retrying: c.retrying, closed: c.closed, withReset: c.withReset, events: state.totals.events,
        reconnects: state.totals.reconnects, resets: state.totals.resets, rate: ratePerSecond(),
        banner: ui.bannerTitle.textContent
      };
    },
    streams: function () {
      return state.streams.map(function (st) {
        return {
          i: st.i, subject: st.subject, state: st.state, opens: st.opens, reconnects: st.reconnects,
          events: st.events, resets: st.resets, lastId: st.lastId, lastData: st.lastData,
          recent: st.recent.slice()
        };
      });
    }
  };

  init();
})();
