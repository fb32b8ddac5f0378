// edge admin UI: the script behind the shell page (index.html). It picks the page from
// location.pathname (/, /tls, /storms, /config), builds it inside <main>, and then polls
// the JSON API every POLL_MS, updating numbers, tables and uPlot charts in place.
//
// Contract with the server: the API lives on the same origin under /api/ and answers JSON;
// requests carry the session cookie that GET /login?token=T sets (credentials:
// 'same-origin'); a 401 means no valid cookie, and the page then says how to log in.
// Times from the API are unix milliseconds, except series' `t` (unix seconds, which is
// also what uPlot's time axis takes).
//
// Every element with a `data-live` attribute shows a number that came from the API, and
// the attribute holds that raw number; an element that has no number to show (null in
// the API, e.g. no cache) shows "n/a" and has no `data-live`.
'use strict';

const POLL_MS = 2000;          // refresh period while the API answers
const POLL_AUTH_MS = 10000;    // refresh period after a 401 (waiting for a login elsewhere)
const CHART_HEIGHT = 200;      // plot height in CSS px; the legend comes below it
const COLORS = { blue: '#5aa9ff', green: '#4cd59a', amber: '#f0b74a', red: '#ff6b6b',
  purple: '#b48cff', cyan: '#4dd0e1', grey: '#8b95a7' };
const CAUSES = {
  client_closed_after_error: 'clients close the connection after an error response and reconnect',
  aborted_mid_body: 'clients abort a response mid-body and reconnect',
  server_closed_after_error: 'the server closes the connection after an error response',
  connection_per_request: 'clients open a new connection for every request',
  new_clients: 'handshakes from clients that were not seen before',
};

// ---------------------------------------------------------------- DOM and formatting

/** Creates an element. attrs: `class`, `text`, `onX` (listener), anything else is an
 *  attribute (skipped when null/false). Children may be nodes, strings or arrays. */
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid != null) e.append(kid.nodeType ? kid : String(kid));
  return e;
}

const isNum = v => typeof v === 'number' && Number.isFinite(v);
const fixed = d => v => v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
const int = fixed(0);
const pct = v => (v * 100).toFixed(1) + ' %';
const pct0 = v => (v * 100).toFixed(1);                  // a ratio as a percentage, unit shown apart
const ms = v => v.toFixed(v < 10 ? 2 : 1);

/** Short number for axes and legends: 950, 1.2k, 3.4M. */
function short(v) {
  if (!isNum(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(0) + 'k';
  if (a >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  if (a >= 10 || a === 0) return v.toFixed(0);
  return v.toPrecision(2);
}

/** Seconds as "1d 2h", "3h 4m", "5m 6s" or "7s". */
function dur(s) {
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), hh = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** Unix milliseconds as local "YYYY-MM-DD HH:MM:SS". */
function when(tms) {
  const d = new Date(tms), p = n => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Shows API number `value` in element `e` as `format(value)` and sets data-live to the raw
 *  value; a non-number shows `empty` and removes data-live. */
function live(e, value, format, empty = 'n/a') {
  if (isNum(value)) { e.textContent = format(value); e.dataset.live = String(value); }
  else { e.textContent = empty; delete e.dataset.live; }
  const unit = e.nextElementSibling;  // a card's unit goes with the number
  if (unit && unit.classList.contains('unit')) unit.hidden = !isNum(value);
}

/** A labelled number card appended to `parent`, `unit` shown small after the value;
 *  returns its value element (for live()) and its note element. */
function card(parent, label, unit, cls) {
  const v = h('span', { text: '–' }), note = h('div', { class: 'note' });
  parent.append(h('div', { class: 'card' + (cls ? ' ' + cls : '') }, h('div', { class: 'label', text: label }),
    h('div', { class: 'value' }, v, unit ? h('span', { class: 'unit', text: unit }) : null), note));
  return { v, note };
}

/** A titled panel appended to `parent`; returns its body element. */
function panel(parent, title, cls) {
  const body = h('div', { class: 'panel-body' });
  parent.append(h('section', { class: 'panel' + (cls ? ' ' + cls : '') }, h('h3', { text: title }), body));
  return body;
}

/** Replaces `box`'s content with a table. cols: [{label, num?, key?}] (num: right-aligned,
 *  key: not wrapped); rows: arrays of cell
 *  contents (nodes or strings); `empty` is shown instead when there are no rows. */
function table(box, cols, rows, empty = 'none yet') {
  if (!rows.length) { box.replaceChildren(h('p', { class: 'dim', text: empty })); return; }
  box.replaceChildren(h('table', {},
    h('thead', {}, h('tr', {}, cols.map(c => h('th', { class: c.num ? 'num' : null, text: c.label })))),
    h('tbody', {}, rows.map(r => h('tr', {}, r.map((cell, i) => h('td', { class: cols[i].num ? 'num' : cols[i].key ? 'key' : null }, cell)))))));
}

/** `text` in a <code> that may wrap after '_', '/' and '.' (long cipher names, paths). */
function breakable(text) {
  const parts = String(text).split(/(?<=[_/.])/);
  return h('code', {}, parts.flatMap((p, i) => (i ? [h('wbr'), p] : [p])));
}

/** A name → count table with share and a bar, biggest first. `entries`: [[name, count]]. */
function mixTable(box, nameLabel, entries, empty) {
  const total = entries.reduce((a, [, n]) => a + (isNum(n) ? n : 0), 0);
  const max = Math.max(0, ...entries.map(([, n]) => n));
  const rows = [...entries].sort((a, b) => b[1] - a[1]).map(([name, n]) => {
    const count = h('span'); live(count, n, int);
    const bar = h('div', { class: 'bar' }); bar.style.width = (max ? (100 * n / max) : 0) + '%';
    return [breakable(name), count, total ? pct(n / total) : '–', h('div', { class: 'bar-track' }, bar)];
  });
  table(box, [{ label: nameLabel }, { label: 'count', num: true }, { label: 'share', num: true }, { label: '' }], rows, empty);
}

// ---------------------------------------------------------------- API

/** An API answer other than 2xx; `status` is the HTTP status. */
class HttpError extends Error {
  constructor(status, path) { super(`HTTP ${status} from ${path}`); this.status = status; }
}

/** The server did not answer at all (down, restarting, network). */
class NetError extends Error {}

/** GETs `path` from the API with the session cookie and returns the parsed JSON;
 *  throws HttpError on a non-2xx answer and NetError when the server is unreachable. */
async function api(path) {
  let r;
  try { r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } }); }
  catch (e) { throw new NetError(`${path}: ${e.message}`); }
  if (!r.ok) throw new HttpError(r.status, path);
  return r.json();
}

/** Series resolution chosen on this page: 's' (per second, last hour) or 'm' (per minute,
 *  last day); kept in the URL as ?res=m so a reload keeps it. */
let res = new URLSearchParams(location.search).get('res') === 'm' ? 'm' : 's';

/** The resolution selector; changing it updates the URL and refreshes at once. */
function resSelect() {
  const sel = h('select', { 'aria-label': 'series resolution' },
    h('option', { value: 's', text: 'last hour, per second' }),
    h('option', { value: 'm', text: 'last day, per minute' }));
  sel.value = res;
  sel.addEventListener('change', () => {
    res = sel.value;
    const q = new URLSearchParams(location.search);
    if (res === 'm') q.set('res', 'm'); else q.delete('res');
    history.replaceState(null, '', location.pathname + (q.toString() ? '?' + q : ''));
    tick();
  });
  return h('label', { class: 'res' }, 'Charts: ', sel);
}

/** Fetches /api/series at the chosen resolution; adds `step` (seconds per point),
 *  `rate(col)`, the column divided by `step` (so per-minute counts become per-second rates),
 *  and `sum(a, b)`, two columns added point by point (null where both are null). */
async function series() {
  const s = await api('/api/series?res=' + res);
  s.step = s.res === 'm' ? 60 : 1;
  s.rate = col => (col || []).map(v => (isNum(v) ? v / s.step : null));
  s.sum = (a, b) => a.map((v, i) => (isNum(v) || isNum(b[i]) ? ((v || 0) + (b[i] || 0)) : null));
  return s;
}

// ---------------------------------------------------------------- charts

const AXIS = { stroke: '#9aa6b8', grid: { stroke: 'rgba(255,255,255,0.07)', width: 1 },
  ticks: { stroke: 'rgba(255,255,255,0.15)', width: 1 } };
const charts = [];

/** x-axis tick labels (local time): HH:MM:SS when ticks are under a minute apart, else
 *  HH:MM; the first tick and the first of each new day get the date on a second line. */
function timeTicks(u, splits, axisIdx, space, incr) {
  const p = n => String(n).padStart(2, '0');
  let lastDay = '';
  return splits.map(t => {
    const d = new Date(t * 1000), day = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
    let l = `${p(d.getHours())}:${p(d.getMinutes())}` + (incr < 60 ? `:${p(d.getSeconds())}` : '');
    if (day !== lastDay) l += '\n' + day;
    lastDay = day;
    return l;
  });
}

/** A uPlot time-series chart in a `.chart` container inside a titled panel. `ys` are the y
 *  series ({label, color, fill?}), `unit` goes after legend values. `shade`, if given,
 *  returns [[from_s, to_s], ...] intervals painted behind grid and lines (storms).
 *  set([t, ...ys]) draws; the uPlot is made on the first set, when the container has its
 *  real width, and resized with the window. */
class Chart {
  constructor(parent, title, ys, { unit = '', shade = null } = {}) {
    this.box = h('div', { class: 'chart' });
    parent.append(h('section', { class: 'panel' }, h('h3', { text: title }), this.box));
    this.ys = ys; this.unit = unit; this.shade = shade; this.u = null;
  }
  set(data) {
    if (this.u) { this.u.setData(data); return; }
    const u = this.unit;
    this.u = new uPlot({
      width: this.box.clientWidth || 600, height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } },  // no zoom: every refresh would reset it
      scales: { x: { time: true }, y: { range: (_, min, max) => [0, isNum(max) && max > 0 ? max * 1.1 : 1] } },
      axes: [{ ...AXIS, space: 64, values: timeTicks }, { ...AXIS, size: 52, values: (_, vals) => vals.map(short) }],
      series: [{ value: (_, t) => (t == null ? '–' : when(t * 1000)) },
        ...this.ys.map(y => ({ label: y.label, stroke: y.color, width: 1.5, fill: y.fill || null,
          points: { show: false }, value: (_, v) => (v == null ? '–' : short(v) + u) }))],
      hooks: this.shade ? { drawClear: [p => paintShade(p, this.shade())] } : {},
    }, data, this.box);
    charts.push(this);
  }
  resize() { if (this.u) this.u.setSize({ width: this.box.clientWidth, height: CHART_HEIGHT }); }
}

/** uPlot drawClear hook body: fills each [from_s, to_s] interval of the x axis over the
 *  plot area (clipped to it), under the grid and the lines. */
function paintShade(u, intervals) {
  const { ctx } = u, { left, top, width, height } = u.bbox;
  ctx.save();
  for (const [a, b] of intervals) {
    const x0 = Math.max(left, u.valToPos(a, 'x', true));
    const x1 = Math.min(left + width, u.valToPos(b, 'x', true));
    if (!(x1 > x0 - 1)) continue;
    const w = Math.max(2, x1 - x0);
    ctx.fillStyle = 'rgba(255, 107, 107, 0.16)';
    ctx.fillRect(x0, top, w, height);
    ctx.fillStyle = 'rgba(255, 107, 107, 0.7)';
    ctx.fillRect(x0, top, w, 3 * devicePixelRatio);
  }
  ctx.restore();
}

let resizeTimer = 0;
addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => charts.forEach(c => c.resize()), 150);
});

// ---------------------------------------------------------------- pages
// Each page builds its DOM in `main` and returns refresh(ov), called on every poll with
// the /api/overview answer (which the header uses too).

function overviewPage(main) {
  main.append(h('div', { class: 'page-head' }, h('h2', { text: 'Overview' }), resSelect()));
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  const thr = card(cards, 'Throughput', 'MB/s'), rps = card(cards, 'Requests', '/s'), conns = card(cards, 'Open connections');
  const ktls = card(cards, 'kTLS share', '%'), hit = card(cards, 'Cache hit ratio', '%'), hs = card(cards, 'TLS handshakes', '/s');
  const errs = card(cards, '4xx + 5xx', '/s'), storm = card(cards, 'Storm');
  const grid = h('div', { class: 'grid' });
  main.append(grid);
  const cThr = new Chart(grid, 'Throughput (MB/s)', [{ label: 'MB/s', color: COLORS.blue, fill: 'rgba(90,169,255,0.12)' }], { unit: ' MB/s' });
  const cConn = new Chart(grid, 'Open connections', [{ label: 'open', color: COLORS.cyan, fill: 'rgba(77,208,225,0.10)' }]);
  const cHs = new Chart(grid, 'TLS handshakes / s', [{ label: 'full', color: COLORS.amber },
    { label: 'resumed', color: COLORS.green }, { label: 'failed', color: COLORS.red }], { unit: '/s' });
  const cErr = new Chart(grid, 'Error responses / s', [{ label: '4xx', color: COLORS.amber }, { label: '5xx', color: COLORS.red }], { unit: '/s' });

  return async ov => {
    live(thr.v, ov.throughput_bytes_per_s, v => fixed(2)(v / 1e6));
    thr.note.textContent = isNum(ov.throughput_bytes_per_s) ? fixed(1)(ov.throughput_bytes_per_s * 8 / 1e6) + ' Mbit/s' : '';
    live(rps.v, ov.requests_per_s, fixed(1));
    rps.note.textContent = 'rates: last 10 s';
    live(conns.v, ov.connections_open, int);
    live(ktls.v, ov.ktls_share, pct0);
    live(hit.v, ov.cache_hit_ratio, pct0);
    hit.note.textContent = ov.cache_hit_ratio == null ? 'no cache configured' : '';
    live(hs.v, ov.handshakes_per_s, fixed(1));
    live(errs.v, ov.errors_per_s, fixed(2));
    storm.v.replaceChildren(ov.storm_active ? h('a', { class: 'badge', href: '/storms', text: 'active' })
      : h('span', { class: 'ok', text: 'none' }));


    const s = await series();
    cThr.set([s.t, s.rate(s.bytes).map(v => (v == null ? null : v / 1e6))]);
    cConn.set([s.t, s.connections_open]);
    cHs.set([s.t, s.rate(s.handshakes_full), s.rate(s.handshakes_resumed), s.rate(s.handshake_failures)]);
    cErr.set([s.t, s.rate(s.status_4xx), s.rate(s.status_5xx)]);
  };
}

function tlsPage(main) {
  main.append(h('div', { class: 'page-head' }, h('h2', { text: 'TLS' }), resSelect()));
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  const full = card(cards, 'Full handshakes'), resumed = card(cards, 'Resumed handshakes');
  const share = card(cards, 'Resumed share', '%'), fails = card(cards, 'Failed handshakes');
  const p50 = card(cards, 'Latency p50', 'ms'), p95 = card(cards, 'Latency p95', 'ms'), p99 = card(cards, 'Latency p99', 'ms');
  const grid = h('div', { class: 'grid' });
  main.append(grid);
  const cHs = new Chart(grid, 'Handshakes / s', [{ label: 'full', color: COLORS.amber },
    { label: 'resumed', color: COLORS.green }], { unit: '/s' });
  const cLat = new Chart(grid, 'Handshake latency (ms)', [{ label: 'p50', color: COLORS.green },
    { label: 'p95', color: COLORS.amber }, { label: 'p99', color: COLORS.red }], { unit: ' ms' });
  const tables = h('div', { class: 'grid tables' });
  main.append(tables);
  const tFail = panel(tables, 'Failures by reason'), tVer = panel(tables, 'Protocol versions');
  const tCiph = panel(tables, 'Cipher suites'), tGrp = panel(tables, 'Key-exchange groups');
  const tSni = panel(tables, 'SNI'), tAlpn = panel(tables, 'ALPN');

  return async () => {
    const [t, s] = await Promise.all([api('/api/tls'), series()]);
    live(full.v, t.handshakes_full, int);
    live(resumed.v, t.handshakes_resumed, int);
    const n = (t.handshakes_full || 0) + (t.handshakes_resumed || 0);
    live(share.v, n ? t.handshakes_resumed / n : null, pct0);
    full.note.textContent = 'since start';
    const failures = Object.entries(t.failures || {});
    live(fails.v, failures.reduce((a, [, c]) => a + c, 0), int);
    const lat = t.latency_ms || {};
    live(p50.v, lat.p50, ms); live(p95.v, lat.p95, ms); live(p99.v, lat.p99, ms);
    mixTable(tFail, 'reason', failures, 'no failures');
    mixTable(tVer, 'version', Object.entries(t.versions || {}));
    mixTable(tCiph, 'cipher suite', Object.entries(t.ciphers || {}));
    mixTable(tGrp, 'group', Object.entries(t.groups || {}));
    mixTable(tSni, 'SNI', Object.entries(t.sni || {}));
    mixTable(tAlpn, 'protocol', Object.entries(t.alpn || {}));
    cHs.set([s.t, s.rate(s.handshakes_full), s.rate(s.handshakes_resumed)]);
    cLat.set([s.t, s.hs_p50_ms || [], s.hs_p95_ms || [], s.hs_p99_ms || []]);
  };
}

/** [start_s, end_s] of a storm for shading; an ongoing storm ends at `nowMs`. */
const stormSpan = (st, nowMs) => [st.start_ms / 1000, (st.end_ms ?? nowMs) / 1000];

/** A link to a storm's drill-down. */
const stormLink = (st, text) => h('a', { href: '/storms?id=' + encodeURIComponent(st.id), text });

/** "404 ×1700, 403 ×3" from [[code, count], ...]. */
const topList = (pairs, n = 2) => (pairs || []).slice(0, n).map(([k, c]) => `${k} ×${int(c)}`).join(', ') || '–';

/** The cause name with its explanation as a tooltip. */
const causeCell = c => h('span', { class: 'cause', title: CAUSES[c] || '' }, breakable(c || '–'));

function stormsPage(main) {
  main.append(h('div', { class: 'page-head' }, h('h2', { text: 'Handshake storms' }), resSelect()));
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  const count = card(cards, 'Storms recorded'), hs = card(cards, 'TLS handshakes', '/s'), errs = card(cards, '4xx + 5xx', '/s');
  const active = card(cards, 'Active storm', null, 'wide');
  let spans = [];
  const chart = new Chart(main, 'Handshakes and error responses / s (storms shaded)', [
    { label: 'handshakes', color: COLORS.blue }, { label: '4xx', color: COLORS.amber },
    { label: '5xx', color: COLORS.red }], { unit: '/s', shade: () => spans });
  const list = panel(main, 'Storms (newest first)');

  return async ov => {
    const [st, s] = await Promise.all([api('/api/storms'), series()]);
    const all = st.storms || [];
    if (st.active && !all.some(x => x.id === st.active.id)) all.unshift(st.active);
    live(count.v, all.length, int);
    live(hs.v, ov.handshakes_per_s, fixed(1));
    live(errs.v, ov.errors_per_s, fixed(2));
    active.v.replaceChildren(st.active ? stormLink(st.active, 'since ' + when(st.active.start_ms).slice(11))
      : h('span', { class: 'ok', text: 'none' }));
    active.note.textContent = st.active ? `${st.active.cause} · peak ${fixed(1)(st.active.peak_rate)}/s` : '';
    spans = all.map(x => stormSpan(x, ov.now_ms));
    chart.set([s.t, s.sum(s.rate(s.handshakes_full), s.rate(s.handshakes_resumed)), s.rate(s.status_4xx), s.rate(s.status_5xx)]);
    table(list, [{ label: 'start' }, { label: 'end' }, { label: 'duration', num: true }, { label: 'peak /s', num: true },
      { label: 'baseline /s', num: true }, { label: 'excess handshakes', num: true }, { label: 'cause' }, { label: 'top status' }],
    all.map(x => {
      const peak = h('span'), base = h('span'), excess = h('span');
      live(peak, x.peak_rate, fixed(1)); live(base, x.baseline_rate, fixed(1)); live(excess, x.excess_handshakes, int);
      return [stormLink(x, when(x.start_ms)), x.end_ms == null ? h('span', { class: 'badge', text: 'ongoing' }) : when(x.end_ms),
        dur(((x.end_ms ?? ov.now_ms) - x.start_ms) / 1000), peak, base, excess, causeCell(x.cause), topList(x.top_status)];
    }), 'No storms recorded since start.');
  };
}

function stormDetailPage(main, id) {
  const title = h('h2', { text: 'Storm ' + id });
  main.append(h('div', { class: 'page-head' }, title, h('a', { href: '/storms', text: '← all storms' })));
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  const c = {};
  for (const [k, label, unit] of [['duration', 'Duration'], ['peak', 'Peak handshakes', '/s'], ['base', 'Baseline', '/s'],
    ['excess', 'Excess handshakes'], ['reconn', 'Reconnects after error', '%'], ['corr', 'Correlation']]) c[k] = card(cards, label, unit);
  let span = [];
  const chart = new Chart(main, 'This storm ± 60 s, per second', [{ label: 'handshakes', color: COLORS.blue },
    { label: '4xx', color: COLORS.amber }, { label: '5xx', color: COLORS.red }], { unit: '/s', shade: () => [span] });
  const grid = h('div', { class: 'grid tables' });
  main.append(grid);
  const fields = panel(grid, 'Fields'), causes = panel(grid, 'Cause breakdown'), status = panel(grid, 'Top status codes');
  const prefixes = panel(grid, 'Top path prefixes'), nets = panel(grid, 'Top client networks'), uas = panel(grid, 'Top user agents');

  return async ov => {
    let st;
    try { st = await api('/api/storms/' + encodeURIComponent(id)); } catch (e) {
      if (e.status !== 404) throw e;
      main.replaceChildren(h('h2', { text: 'Storm ' + id }), h('p', {}, 'No storm with this id (it may have aged out). ',
        h('a', { href: '/storms', text: 'All storms' })));
      return;
    }
    span = stormSpan(st, ov.now_ms);
    title.textContent = 'Storm of ' + when(st.start_ms);
    live(c.duration.v, ((st.end_ms ?? ov.now_ms) - st.start_ms) / 1000, dur);
    c.duration.note.replaceChildren(st.end_ms == null ? h('span', { class: 'badge', text: 'ongoing' }) : 'ended');
    live(c.peak.v, st.peak_rate, fixed(1)); live(c.base.v, st.baseline_rate, fixed(1));
    live(c.excess.v, st.excess_handshakes, int);
    live(c.reconn.v, st.reconnect_after_error_share, pct0);
    c.reconn.note.textContent = 'share of handshakes';
    live(c.corr.v, st.correlation, fixed(2));
    c.corr.note.textContent = 'handshakes vs errors';
    const row = (k, v) => [k, v];
    table(fields, [{ label: 'field', key: true }, { label: 'value' }], [
      row('id', String(st.id)), row('start', when(st.start_ms)),
      row('end', st.end_ms == null ? h('span', { class: 'badge', text: 'ongoing' }) : when(st.end_ms)),
      row('cause', causeCell(st.cause)), row('', h('span', { class: 'dim', text: CAUSES[st.cause] || '' })),
      row('peak rate', fixed(1)(st.peak_rate) + ' /s'), row('baseline rate', fixed(1)(st.baseline_rate) + ' /s'),
      row('excess handshakes', int(st.excess_handshakes)),
      row('reconnect after error share', isNum(st.reconnect_after_error_share) ? pct(st.reconnect_after_error_share) : 'n/a'),
      row('correlation', isNum(st.correlation) ? fixed(2)(st.correlation) : 'n/a')]);
    mixTable(causes, 'cause', Object.entries(st.causes || {}));
    for (const tr of causes.querySelectorAll('tbody tr')) {
      const name = tr.firstChild.textContent;
      tr.firstChild.title = CAUSES[name] || '';
      if (name === st.cause) tr.classList.add('hl');
    }
    mixTable(status, 'status', st.top_status || []);
    mixTable(prefixes, 'path prefix', st.top_prefixes || []);
    mixTable(nets, 'network', st.top_networks || []);
    mixTable(uas, 'user agent', st.top_user_agents || []);
    const sr = st.series || { t: [] };
    chart.set([sr.t, sr.handshakes || [], sr.status_4xx || [], sr.status_5xx || []]);
  };
}

/** Renders a config object TOML-style into `pre`: scalars first, then [tables], then
 *  [[arrays of tables]]; keys in `reloadable` (dotted paths) are marked. */
function renderConfig(pre, cfg, reloadable) {
  const out = [];
  const key = k => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k));
  const isTable = v => v && typeof v === 'object' && !Array.isArray(v);
  const isTableArray = v => Array.isArray(v) && v.length > 0 && v.every(isTable);
  const lit = v => (Array.isArray(v) ? '[' + v.map(lit).join(', ') + ']' : JSON.stringify(v));
  const line = (text, cls) => out.push(h('span', { class: cls || null, text }), '\n');
  function section(obj, path, arrayIndex) {
    for (const [k, v] of Object.entries(obj)) {
      if (isTable(v) || isTableArray(v)) continue;
      const dotted = path.concat(k).join('.');
      const re = arrayIndex == null && reloadable.has(dotted);
      if (v == null) line(`# ${key(k)} = (not set)`, 'dim');
      else out.push(h('span', { class: 'k' + (re ? ' reloadable' : ''), text: key(k) }), ' = ',
        h('span', { class: 'v', text: lit(v) }), re ? h('span', { class: 'tag', text: '  ⟳ live' }) : '', '\n');
    }
    for (const [k, v] of Object.entries(obj)) {
      if (!isTable(v)) continue;
      const p = path.concat(k);
      out.push('\n'); line(`[${p.map(key).join('.')}]`, 'section');
      section(v, p, arrayIndex);
    }
    for (const [k, v] of Object.entries(obj)) {
      if (!isTableArray(v)) continue;
      const p = path.concat(k);
      v.forEach((item, i) => { out.push('\n'); line(`[[${p.map(key).join('.')}]]`, 'section'); section(item, p, i); });
    }
  }
  section(cfg || {}, [], null);
  while (out.length && (out[0] === '\n')) out.shift();
  pre.replaceChildren(...out);
}

function configPage(main) {
  main.append(h('div', { class: 'page-head' }, h('h2', { text: 'Effective configuration' })));
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  const nre = card(cards, 'Live-reloadable keys'), up = card(cards, 'Uptime');
  cards.classList.add('narrow');
  const grid = h('div', { class: 'grid config' });
  main.append(grid);
  const cfgBox = panel(grid, 'Config (secrets redacted)');
  const pre = h('pre', { class: 'config' });
  cfgBox.append(pre);
  const reBox = panel(grid, 'Live-reloadable keys');
  let last = '';

  return async ov => {
    live(up.v, ov.uptime_s, dur);
    const c = await api('/api/config');
    const re = c.reloadable || [];
    live(nre.v, re.length, int);
    nre.note.textContent = 'applied without a restart';
    const text = JSON.stringify(c);
    if (text === last) return;  // re-render only on change, so a text selection survives the poll
    last = text;
    renderConfig(pre, c.config, new Set(re));
    reBox.replaceChildren(re.length ? h('ul', { class: 'keys' }, re.map(k => h('li', {}, h('code', { text: k }))))
      : h('p', { class: 'dim', text: 'none' }));
  };
}

// ---------------------------------------------------------------- shell and polling

const banner = document.getElementById('banner');

/** Shows `node` in the banner (class `kind`), or hides it when node is null. */
function say(node, kind) {
  banner.hidden = !node;
  banner.className = 'banner ' + (kind || '');
  banner.replaceChildren(...(node ? [node] : []));
}

/** The page for this path: [nav key, refresh function]. */
function pickPage(main) {
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const id = new URLSearchParams(location.search).get('id');
  switch (path) {
    case '/': return ['overview', overviewPage(main)];
    case '/tls': return ['tls', tlsPage(main)];
    case '/storms': return ['storms', id ? stormDetailPage(main, id) : stormsPage(main)];
    case '/config': return ['config', configPage(main)];
    default:
      main.append(h('h2', { text: 'Not found' }), h('p', {}, 'No page at ', h('code', { text: path }), '.'));
      return [null, async () => {}];
  }
}

const main = document.getElementById('main');
main.replaceChildren();
const [navKey, refresh] = pickPage(main);
for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === navKey);

let timer = 0, busy = false;

/** One poll: /api/overview for the header, then the page's own refresh. Schedules the next
 *  poll when done, so polls never overlap; calling it early (resolution change) is fine. */
async function tick() {
  clearTimeout(timer);
  if (busy) { timer = setTimeout(tick, 200); return; }
  busy = true;
  let next = POLL_MS;
  try {
    const ov = await api('/api/overview');
    live(document.getElementById('uptime'), ov.uptime_s, dur, '–');
    document.getElementById('storm-badge').hidden = !ov.storm_active;
    await refresh(ov);
    document.getElementById('updated').textContent = 'updated ' + when(Date.now()).slice(11);
    say(null);
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) {
      next = POLL_AUTH_MS;
      say(h('span', {}, 'Token required: open ', h('code', { text: '/login?token=…' }),
        ' in this browser with the admin token (the server\'s admin token file) to sign in.'), 'error');
    } else {
      if (!(e instanceof HttpError || e instanceof NetError)) console.error(e);  // a bug here, not the server
      say(h('span', { text: (e instanceof NetError ? 'Server unreachable: ' : 'Error: ') + e.message +
        ' — showing the last data, retrying.' }), 'warn');
    }
    document.getElementById('updated').textContent = 'stale';
  } finally {
    busy = false;
    timer = setTimeout(tick, next);
  }
}
tick();
