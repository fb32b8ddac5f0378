#!/usr/bin/env node
// Admin UI test: the admin plane of an already running edge server, seen from outside and
// through headless Debian Chromium.
//
// Usage: node admin_ui_test.js --base http://127.0.0.1:PORT --token TOKEN [--wait 20]
// The server is NOT started here: the caller starts edge (admin listener on --base) first.
//
// Checks, each printed as one PASS/FAIL line:
//   - without credentials every page, asset, API route and /metrics answers 401, and a
//     wrong token (bearer or /login) gets 401 too;
//   - with the bearer token the pages, assets and API answer 200 with the right
//     Content-Type, and the shell page carries the Content-Security-Policy;
//   - GET /login?token=TOKEN answers 303 to / with an HttpOnly SameSite=Strict cookie;
//   - in Chromium, after /login, each page (/, /tls, /storms, the drill-down of the first
//     storm if there is one, /config) reaches, within --wait seconds: every [data-live]
//     element holding a number (at least one per page), every .chart with a canvas whose
//     pixels are not all the same, and no console errors, page errors or HTTP errors;
//   - the storm shading is drawn where a storm lies inside the chart, and the per-minute
//     series selector works.
// Then "N passed, M failed". Exit 0 only if all passed.
// Screenshots: tests/browser/screenshots/admin-{overview,tls,storms,storm-detail,config}.png.
'use strict';
const fs = require('fs');
const path = require('path');
const { CHROMIUM, launch: launchChromium } = require('./chromium');

const HERE = __dirname;
const SHOTS = path.join(HERE, 'screenshots');

function usage(msg) {
  if (msg) console.error('error: ' + msg);
  console.error('usage: node admin_ui_test.js --base http://127.0.0.1:PORT --token TOKEN [--wait 20]');
  process.exit(2);
}
function arg(name, def) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0) return def;
  if (i + 1 >= process.argv.length) usage('--' + name + ' needs a value');
  return process.argv[i + 1];
}
if (process.argv.includes('-h') || process.argv.includes('--help')) usage();
const base = (arg('base', process.env.EDGE_ADMIN_BASE) || '').replace(/\/+$/, '');
if (!/^https?:\/\/[^/]+$/.test(base)) usage('--base http://HOST:PORT is required');
const token = arg('token', process.env.EDGE_ADMIN_TOKEN || '');
if (!token) usage('--token TOKEN is required');
const waitMs = +arg('wait', 20) * 1000;
if (!(waitMs > 0)) usage('--wait takes seconds');
if (!fs.existsSync(CHROMIUM)) usage(`${CHROMIUM} not found (run tests/browser/install.sh, or set CHROMIUM=)`);
if (base.startsWith('https:')) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';  // self-signed admin cert

let passed = 0, failed = 0;
/** Records and prints one check. */
function check(name, ok, detail) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ' | ' + detail : ''}`);
}
const firstLine = e => String(e && e.message || e).replace(/\x1b\[[0-9;]*m/g, '').split('\n')[0];

/** Node fetch without cookies and without following redirects. */
async function get(p, headers = {}) {
  return fetch(base + p, { headers, redirect: 'manual' });
}

const PAGES = ['/', '/tls', '/storms', '/config'];
const PROTECTED = [...PAGES, '/assets/app.js', '/api/overview', '/api/series?res=s', '/api/tls',
  '/api/storms', '/api/config', '/metrics'];

async function httpChecks() {
  for (const p of PROTECTED) {
    try {
      const r = await get(p);
      check(`401 without credentials: ${p}`, r.status === 401, `HTTP ${r.status}`);
    } catch (e) { check(`401 without credentials: ${p}`, false, firstLine(e)); }
  }
  for (const p of ['/api/overview', '/metrics', '/']) {
    const r = await get(p, { Authorization: 'Bearer wrong-' + token });
    check(`401 with a wrong bearer token: ${p}`, r.status === 401, `HTTP ${r.status}`);
  }
  {
    const r = await get('/login?token=' + encodeURIComponent('wrong-' + token));
    check('401 from /login with a wrong token, no cookie', r.status === 401 && !r.headers.get('set-cookie'),
      `HTTP ${r.status}, set-cookie ${r.headers.get('set-cookie') ? 'present' : 'absent'}`);
  }
  const auth = { Authorization: 'Bearer ' + token };
  const types = [['/', /^text\/html/], ['/assets/app.js', /^(text|application)\/javascript/],
    ['/assets/app.css', /^text\/css/], ['/assets/uPlot.iife.min.js', /^(text|application)\/javascript/],
    ['/assets/uPlot.min.css', /^text\/css/], ['/api/overview', /^application\/json/],
    ['/api/series?res=m', /^application\/json/], ['/api/tls', /^application\/json/],
    ['/api/storms', /^application\/json/], ['/api/config', /^application\/json/]];
  for (const [p, re] of types) {
    const r = await get(p, auth);
    const ct = r.headers.get('content-type') || '';
    check(`200 with the bearer token: ${p}`, r.status === 200 && re.test(ct), `HTTP ${r.status}, ${ct || 'no Content-Type'}`);
  }
  {
    const r = await get('/storms', auth);
    const csp = r.headers.get('content-security-policy') || '';
    check('shell page sends Content-Security-Policy default-src \'self\'', /default-src 'self'/.test(csp), csp || 'absent');
  }
  {
    const r = await get('/login?token=' + encodeURIComponent(token));
    const sc = r.headers.get('set-cookie') || '';
    check('/login?token=TOKEN answers 303 to / with an HttpOnly SameSite=Strict cookie',
      r.status === 303 && r.headers.get('location') === '/' && /httponly/i.test(sc) && /samesite=strict/i.test(sc),
      `HTTP ${r.status}, Location ${r.headers.get('location')}, Set-Cookie ${sc.replace(/=[^;]*/, '=…') || 'absent'}`);
  }
  // the first storm for the drill-down: the active one, else the newest
  try {
    const s = await (await get('/api/storms', auth)).json();
    return s.active || (s.storms || [])[0] || null;
  } catch (e) { check('/api/storms parses', false, firstLine(e)); return null; }
}


/** Runs in the page: the state of [data-live] elements and chart canvases. A canvas is
 *  blank when all its pixels are equal; `shade` counts pixels of the storm shading
 *  (translucent red, alpha about 0.16, as app.js paints it). */
function pageState() {
  const lives = [...document.querySelectorAll('[data-live]')];
  const badLive = lives.filter(e => {
    const v = e.getAttribute('data-live');
    return v.trim() === '' || !Number.isFinite(Number(v)) || !/\d/.test(e.textContent);
  }).map(e => `${e.getAttribute('data-live')}="${e.textContent}"`);
  const charts = [...document.querySelectorAll('.chart')].map(c => {
    const cv = c.querySelector('canvas');
    if (!cv || !cv.width || !cv.height) return { canvas: false, blank: true, shade: 0 };
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let blank = true, shade = 0;
    for (let i = 4; i < d.length; i += 4) {
      if (blank && (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3])) blank = false;
      if (d[i + 3] >= 30 && d[i + 3] <= 52 && d[i] > 200 && d[i + 1] < 150 && d[i + 2] < 150) shade++;
    }
    return { canvas: true, blank, shade };
  });
  const ok = lives.length > 0 && !badLive.length && charts.every(c => c.canvas && !c.blank);
  return { ok, lives: lives.length, badLive, charts };
}

/** Visits one page and checks it: loads, numbers, charts, errors; `shade`: a storm must be
 *  shaded; `linkTo`: the page must link there. Saves the screenshot admin-NAME.png. */
async function visit(ctx, { name, url, minCharts, shade, linkTo }) {
  const page = await ctx.newPage();
  await page.setViewportSize({ width: 1280, height: 900 });
  const errors = [];
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text().slice(0, 300)); });
  page.on('pageerror', e => errors.push('pageerror: ' + String(e).slice(0, 300)));
  page.on('requestfailed', r => errors.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('response', r => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`); });
  let st = null;
  try {
    const resp = await page.goto(base + url, { waitUntil: 'load', timeout: 15000 });
    check(`${name}: ${url} loads`, resp && resp.status() === 200, `HTTP ${resp && resp.status()}`);
    const t0 = Date.now();
    // polled from here: page.waitForFunction would eval a string in the page, which the CSP refuses
    for (;;) {
      st = await page.evaluate(pageState);
      if (st.ok || Date.now() - t0 > waitMs) break;
      await page.waitForTimeout(250);
    }
    const tookMs = Date.now() - t0;
    check(`${name}: [data-live] numbers from the API`, st.lives > 0 && !st.badLive.length,
      `${st.lives} elements` + (st.badLive.length ? `, not numbers: ${st.badLive.slice(0, 4).join(', ')}` : `, ready in ${tookMs} ms`));
    const nc = st.charts.length, drawn = st.charts.filter(c => c.canvas && !c.blank).length;
    check(`${name}: charts drawn`, nc >= minCharts && drawn === nc, `${drawn}/${nc} .chart canvases non-blank (want >= ${minCharts})`);
    if (shade) {
      const px = Math.max(0, ...st.charts.map(c => c.shade));
      check(`${name}: storm interval shaded`, px > 100, `${px} shaded pixels`);
    }
    if (linkTo) {
      const n = await page.locator(`a[href="${linkTo}"]`).count();
      check(`${name}: links to the drill-down ${linkTo}`, n > 0, `${n} links`);
    }
    if (name === 'overview') {
      // the per-minute selector: choose it, the page asks for ?res=m and still draws
      const wait = page.waitForResponse(r => r.url().includes('/api/series?res=m'), { timeout: 10000 });
      await page.selectOption('select', 'm');
      const r = await wait.catch(e => null);
      await page.waitForTimeout(500);
      const st2 = await page.evaluate(pageState);
      check('overview: per-minute series selector', r && r.status() === 200 && st2.ok && /[?&]res=m/.test(page.url()),
        `HTTP ${r && r.status()}, url ${page.url().slice(base.length)}, charts ok ${st2.ok}`);
      await page.selectOption('select', 's');
      await page.waitForTimeout(500);
    }
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, `admin-${name}.png`), fullPage: true });
  } catch (e) {
    check(`${name}: ${url}`, false, 'exception: ' + firstLine(e));
  }
  check(`${name}: no console errors, page errors or HTTP errors`, !errors.length, errors.slice(0, 3).join(' ; '));
  await page.close();
}

(async () => {
  const storm = await httpChecks();
  const b = await launchChromium('edge-admin-ui-');
  try {
    // log in the way an operator does: the cookie lands in the browser profile
    const page = await b.ctx.newPage();
    const resp = await page.goto(`${base}/login?token=${encodeURIComponent(token)}`, { waitUntil: 'load', timeout: 15000 });
    const cookies = await b.ctx.cookies(base);
    check('browser login: lands on / with an HttpOnly cookie',
      resp && resp.status() === 200 && new URL(page.url()).pathname === '/' && cookies.some(c => c.httpOnly),
      `HTTP ${resp && resp.status()} at ${page.url()}, ${cookies.length} cookie(s)`);
    await page.close();

    const nowS = Date.now() / 1000;
    // shading is checked on /storms when a storm overlaps the last hour (the default series)
    const recent = storm && (storm.end_ms == null || storm.end_ms / 1000 > nowS - 3500);
    const pages = [
      { name: 'overview', url: '/', minCharts: 4 },
      { name: 'tls', url: '/tls', minCharts: 2 },
      { name: 'storms', url: '/storms', minCharts: 1, shade: !!recent, linkTo: storm && `/storms?id=${storm.id}` },
    ];
    if (storm) pages.push({ name: 'storm-detail', url: `/storms?id=${storm.id}`, minCharts: 1, shade: true });
    else console.log('SKIP storm-detail (no storm in /api/storms)');
    pages.push({ name: 'config', url: '/config', minCharts: 0 });
    for (const p of pages) await visit(b.ctx, p);
  } catch (e) {
    check('browser', false, 'exception: ' + firstLine(e));
  } finally {
    await b.close();
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
})().catch(e => { console.error(e); process.exit(2); });
