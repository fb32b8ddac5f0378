#!/usr/bin/env node
// A permanently missing segment must not cost TLS handshakes: headless Debian Chromium plays
// an intact HLS TS rendition and a copy of it with one media segment deleted (the edge
// answers 404 for it), for the same wall time each, in a fresh browser (own profile, so no
// connection or TLS session carries over), and the edge's own counters are read from the
// admin plane's /metrics before and after each.
//
// Usage: node missing_segment_test.js --base https://127.0.0.1:PORT --admin http://127.0.0.1:PORT
//          --token TOKEN --broken-src /content/hls_ts_gap/master.m3u8
//          [--missing /content/hls_ts_gap/seg_003.ts] [--intact-src /content/hls_ts/master.m3u8]
//          [--play-seconds 8]
// The server is NOT started here, and the broken copy is made by the caller (tests/run-all.sh,
// stage clients); the edge must run with its default config (no server.close_after_error).
//
// Checks, each printed as one PASS/FAIL line:
//   - the intact rendition plays (currentTime past 2 s) with no 4xx on the segment route;
//   - the broken one: the edge answered 4xx for a segment (edge_responses_by_route_total
//     {route="segment",class="4xx"} rose) and Chromium saw 404 for the missing segment;
//   - the broken one cost no more TLS handshakes (edge_tls_handshakes_total, full + resumed)
//     than the intact one: a 404 is answered on a connection that stays open.
// Then "N passed, M failed". Exit 0 only if all passed.
// Screenshots: tests/browser/screenshots/missing-{intact,broken}.png; details (every request
// with Chromium's connection id and whether it reused a connection):
// tests/browser/logs/missing_segment_results.json.
'use strict';
const fs = require('fs');
const path = require('path');
const { CHROMIUM, launch: launchChromium } = require('./chromium');

const HERE = __dirname;
const sleep = ms => new Promise(r => setTimeout(r, ms));

function usage(msg) {
  if (msg) console.error('error: ' + msg);
  console.error('usage: node missing_segment_test.js --base https://127.0.0.1:PORT --admin http://127.0.0.1:PORT' +
    ' --token TOKEN --broken-src PATH [--missing PATH] [--intact-src PATH] [--play-seconds 8]');
  process.exit(2);
}
function arg(name, def) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0) return def;
  if (i + 1 >= process.argv.length) usage('--' + name + ' needs a value');
  return process.argv[i + 1];
}
if (process.argv.includes('-h') || process.argv.includes('--help')) usage();
const base = (arg('base', process.env.EDGE_BASE) || '').replace(/\/+$/, '');
if (!/^https?:\/\/[^/]+$/.test(base)) usage('--base https://HOST:PORT is required');
const admin = (arg('admin', process.env.EDGE_ADMIN_BASE) || '').replace(/\/+$/, '');
if (!/^https?:\/\/[^/]+$/.test(admin)) usage('--admin http://HOST:PORT is required');
const token = arg('token', process.env.EDGE_ADMIN_TOKEN || '');
if (!token) usage('--token TOKEN is required');
const intactSrc = arg('intact-src', '/content/hls_ts/master.m3u8');
const brokenSrc = arg('broken-src', '');
if (!brokenSrc) usage('--broken-src PATH is required');
const missing = arg('missing', path.posix.join(path.posix.dirname(brokenSrc), 'seg_003.ts'));
const playMs = +arg('play-seconds', 8) * 1000;
if (!(playMs > 0)) usage('--play-seconds takes seconds');
if (!fs.existsSync(CHROMIUM)) usage(`${CHROMIUM} not found (run tests/browser/install.sh, or set CHROMIUM=)`);

let passed = 0, failed = 0;
/** Records and prints one check. */
function check(name, ok, detail) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ' | ' + detail : ''}`);
}
const firstLine = e => String(e && e.message || e).replace(/\x1b\[[0-9;]*m/g, '').split('\n')[0];

/** The counters this test reads, summed over the series that match. */
const COUNTERS = {
  handshakes: ['edge_tls_handshakes_total', () => true],
  full: ['edge_tls_handshakes_total', l => l.kind === 'full'],
  resumed: ['edge_tls_handshakes_total', l => l.kind === 'resumed'],
  accepted: ['edge_connections_accepted_total', l => l.listener === 'tls'],
  seg4xx: ['edge_responses_by_route_total', l => l.route === 'segment' && l.class === '4xx'],
  seg2xx: ['edge_responses_by_route_total', l => l.route === 'segment' && l.class === '2xx'],
};

/** Scrapes /metrics once; returns the COUNTERS. */
async function scrape() {
  const r = await fetch(admin + '/metrics', { headers: { Authorization: 'Bearer ' + token } });
  if (r.status !== 200) throw new Error(`/metrics: HTTP ${r.status}`);
  const text = await r.text();
  const out = {};
  for (const k of Object.keys(COUNTERS)) out[k] = 0;
  const seen = new Set();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const kv of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    for (const [k, [name, match]] of Object.entries(COUNTERS)) {
      if (m[1] === name && match(labels)) { out[k] += Number(m[3]); seen.add(name); }
    }
  }
  for (const [name] of Object.values(COUNTERS)) if (!seen.has(name)) throw new Error(`/metrics has no ${name}`);
  return out;
}

/** Scrapes until the counters have not moved for a second (the telemetry is aggregated
 *  off the request path, so a scrape right after a request can lag it). */
async function settled() {
  let last = await scrape(), since = Date.now();
  const t0 = Date.now();
  while (Date.now() - since < 1000 && Date.now() - t0 < 10000) {
    await sleep(200);
    const now = await scrape();
    if (JSON.stringify(now) !== JSON.stringify(last)) { last = now; since = Date.now(); }
  }
  return last;
}


/** Plays `src` for playMs of wall time in a fresh browser; returns the counter deltas, what
 *  Chromium saw of each request (status, connection id, reused or not) and the player state. */
async function play(name, src) {
  const res = { name, src, url: `${base}/player.html?lib=hlsjs&src=${encodeURIComponent(src)}`, requests: [] };
  res.before = await settled();
  let b = null;
  try {
    b = await launchChromium('edge-missing-');
    const page = await b.ctx.newPage();
    await page.setViewportSize({ width: 680, height: 480 });
    // Chromium's own view of the connections: each response names the socket it came on.
    const cdp = await b.ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.responseReceived', e => {
      const r = e.response;
      if (r.url.startsWith(base)) res.requests.push({ path: r.url.slice(base.length).split('?')[0], status: r.status,
        connectionId: r.connectionId, reused: r.connectionReused, protocol: r.protocol });
    });
    cdp.on('Network.loadingFailed', e => res.requests.push({ failed: e.errorText, requestId: e.requestId }));
    const t0 = Date.now();
    const resp = await page.goto(res.url, { waitUntil: 'load', timeout: 15000 });
    res.pageStatus = resp && resp.status();
    await sleep(Math.max(0, playMs - (Date.now() - t0)));
    res.snapshot = await page.evaluate(() => window.__snapshot());
    const pt = await page.evaluate(() => window.__pt);
    Object.assign(res, { fragLoaded: pt.fragLoaded, errors: pt.errors, fatal: pt.fatal });
    const shot = path.join(HERE, 'screenshots', `missing-${name}.png`);
    fs.mkdirSync(path.dirname(shot), { recursive: true });
    await page.screenshot({ path: shot });
  } catch (e) {
    res.exception = firstLine(e);
  } finally {
    if (b) await b.close();
  }
  res.after = await settled();
  res.delta = {};
  for (const k of Object.keys(res.before)) res.delta[k] = res.after[k] - res.before[k];
  const conns = new Set(res.requests.filter(r => r.connectionId != null).map(r => r.connectionId));
  res.browserConnections = conns.size;
  return res;
}

function summary(r) {
  const d = r.delta, s = r.snapshot || {};
  return `handshakes ${d.handshakes} (full ${d.full}, resumed ${d.resumed}), TLS connections accepted ${d.accepted},` +
    ` Chromium connections ${r.browserConnections}, segments 2xx ${d.seg2xx} 4xx ${d.seg4xx},` +
    ` currentTime ${typeof s.currentTime === 'number' ? s.currentTime.toFixed(2) : '?'} s` +
    (r.exception ? `, exception: ${r.exception}` : '');
}

(async () => {
  const results = [];
  try {
    const intact = await play('intact', intactSrc);
    results.push(intact);
    check(`intact ${intactSrc}: plays, no segment 4xx`,
      !intact.exception && intact.pageStatus === 200 && intact.snapshot.currentTime > 2 && intact.delta.seg4xx === 0 &&
        intact.delta.handshakes > 0, summary(intact));

    const broken = await play('broken', brokenSrc);
    results.push(broken);
    const saw404 = broken.requests.filter(r => r.path === missing && r.status === 404);
    check(`broken ${brokenSrc}: the edge answers 404 for ${missing}`,
      !broken.exception && broken.pageStatus === 200 && broken.delta.seg4xx >= 1 && saw404.length >= 1,
      `${saw404.length} 404 response(s) seen by Chromium, segment 4xx +${broken.delta.seg4xx}` +
        (broken.exception ? `, exception: ${broken.exception}` : ''));
    // what came after the 404 on the browser side, for the log line: reused sockets or new ones
    const i404 = broken.requests.findIndex(r => r.path === missing && r.status === 404);
    const after = i404 < 0 ? [] : broken.requests.slice(i404 + 1).filter(r => r.connectionId != null);
    const newAfter = after.filter(r => !r.reused).length;
    check('a missing segment costs no extra TLS handshakes (broken <= intact)',
      broken.delta.handshakes <= intact.delta.handshakes && broken.delta.handshakes > 0,
      `intact ${intact.delta.handshakes}, broken ${broken.delta.handshakes}` +
        ` | broken: ${summary(broken)}; after the 404 Chromium made ${after.length} request(s), ${newAfter} on new connections`);
  } catch (e) {
    check('missing segment test', false, 'exception: ' + firstLine(e));
  }
  const logs = path.join(HERE, 'logs');
  fs.mkdirSync(logs, { recursive: true });
  fs.writeFileSync(path.join(logs, 'missing_segment_results.json'), JSON.stringify({ base, missing, playMs, results }, null, 1));
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
})().catch(e => { console.error(e); process.exit(2); });
