#!/usr/bin/env node
// Real playback test: headless Debian Chromium plays the demo streams from an already running
// edge server (HTTPS, self-signed certificate) through edge/demo/www/player.html.
//
// Usage: node playback_test.js --base https://127.0.0.1:PORT [--cases hls_ts,hls_fmp4,dash]
//                              [--play-seconds 4] [--start-timeout 20]
// The server is NOT started here: the caller starts edge (serving edge/demo/www) first.
//
// A case passes when, with no fatal player/media error:
//   - video.currentTime reaches --play-seconds (default 4 s) and still advances 2 s later,
//   - decoded video frames > 0 and increasing,
//   - the picture is not blank (luma stddev of a canvas sample),
//   - audio is being decoded and the page itself loaded with HTTP 200.
// Output: one PASS/FAIL line per case, then "N passed, M failed". Exit 0 only if all passed.
// Screenshots: tests/browser/screenshots/<case>.png; details: tests/browser/logs/playback_results.json.
'use strict';
const fs = require('fs');
const path = require('path');
const { CHROMIUM, launch: launchChromium } = require('./chromium');

const HERE = __dirname;
// Files as ffmpeg wrote them (short check), then edge's generated manifests (issue 7):
// VOD cases play the whole 12 s clip; live cases play 12 s of wall clock and must stay
// inside the DVR window and close to the live edge.
const CASES = {
  hls_ts:        { lib: 'hlsjs',  src: '/content/hls_ts/master.m3u8' },
  hls_fmp4:      { lib: 'hlsjs',  src: '/content/hls_fmp4/master.m3u8' },
  dash:          { lib: 'dashjs', src: '/content/dash/manifest.mpd' },
  gen_hls_ts:    { lib: 'hlsjs',  src: '/streams/vod-ts/master.m3u8', vodEnd: 11.4 },
  gen_hls_fmp4:  { lib: 'hlsjs',  src: '/streams/vod-fmp4/master.m3u8', vodEnd: 11.4 },
  gen_hls_audio: { lib: 'hlsjs',  src: '/streams/vod/master.m3u8', vodEnd: 11.4 },
  gen_dash:      { lib: 'dashjs', src: '/streams/vod/manifest.mpd', vodEnd: 11.4 },
  live_hls:      { lib: 'hlsjs',  src: '/streams/live/master.m3u8', live: true },
  live_hls_ts:   { lib: 'hlsjs',  src: '/streams/live-ts/master.m3u8', live: true },
  live_dash:     { lib: 'dashjs', src: '/streams/live/manifest.mpd', live: true },
  // --signed-src gives the signed URL path (edge demo prints one); without it the case is skipped
  signed_hls:    { lib: 'hlsjs',  src: null, vodEnd: 11.4, signed: true },
};
const LIVE_SECONDS = 12;        // wall-clock seconds a live case is watched
const LIVE_MAX_LATENCY = 12;    // seconds behind the live edge allowed (6 segments of 2 s)
const sleep = ms => new Promise(r => setTimeout(r, ms));

function usage(msg) {
  if (msg) console.error('error: ' + msg);
  console.error('usage: node playback_test.js --base https://127.0.0.1:PORT [--cases ' + Object.keys(CASES).join(',') + ']' +
    ' [--play-seconds 4] [--start-timeout 20]');
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
const caseNames = arg('cases', Object.keys(CASES).join(',')).split(',').map(s => s.trim()).filter(Boolean);
for (const n of caseNames) if (!CASES[n]) usage(`unknown case "${n}"`);
const playSeconds = +arg('play-seconds', 4);
const startTimeout = +arg('start-timeout', 20) * 1000;
const signedSrc = arg('signed-src', process.env.EDGE_SIGNED_SRC || '');
if (signedSrc) CASES.signed_hls.src = signedSrc;
if (!fs.existsSync(CHROMIUM)) usage(`${CHROMIUM} not found (run tests/browser/install.sh, or set CHROMIUM=)`);


async function runCase(name) {
  const cs = CASES[name];
  const url = `${base}/player.html?lib=${cs.lib}&src=${encodeURIComponent(cs.src)}`;
  const res = { name, lib: cs.lib, src: cs.src, url };
  const consoleErrors = [], failedRequests = [], httpErrors = [];
  let b = null;
  try {
    const t0 = Date.now();
    b = await launchChromium('edge-playback-');
    res.launchMs = Date.now() - t0;
    const page = await b.ctx.newPage();
    await page.setViewportSize({ width: 680, height: 480 });
    page.on('console', m => { if (m.type() === 'error') consoleErrors.push(m.text().slice(0, 300)); });
    page.on('pageerror', e => consoleErrors.push('pageerror: ' + String(e).slice(0, 300)));
    page.on('requestfailed', r => failedRequests.push(r.url() + ' ' + (r.failure() && r.failure().errorText)));
    page.on('response', r => { if (r.status() >= 400) httpErrors.push(`${r.status()} ${r.url()}`); });
    const tNav = Date.now();
    const resp = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
    res.pageStatus = resp && resp.status();
    if (cs.live) {
      // wait for playback to start, then watch LIVE_SECONDS of wall clock
      await page.waitForFunction(() => (window.__pt && (window.__pt.playingMs != null || window.__pt.fatal)),
        null, { timeout: startTimeout, polling: 100 }).catch(e => { res.waitError = String(e).split('\n')[0]; });
      res.reachTargetMs = Date.now() - tNav;
      res.samples = [];
      for (let i = 0; i <= LIVE_SECONDS; i++) {
        if (i) await sleep(1000);
        res.samples.push(await page.evaluate(() => window.__snapshot()));
      }
      res.s1 = res.samples[0];
      res.s2 = res.samples[res.samples.length - 1];
    } else {
      // wait until playback has really progressed (>= target of media) or a fatal error fired
      const target = cs.vodEnd || playSeconds;
      await page.waitForFunction(s => document.getElementById('v').currentTime >= s || (window.__pt && window.__pt.fatal),
        target, { timeout: startTimeout + target * 1000, polling: 100 }).catch(e => { res.waitError = String(e).split('\n')[0]; });
      res.reachTargetMs = Date.now() - tNav;
      res.s1 = await page.evaluate(() => window.__snapshot());
      await sleep(2000);
      res.s2 = await page.evaluate(() => window.__snapshot());
    }
    const pt = await page.evaluate(() => window.__pt);
    Object.assign(res, { version: pt.version, playingMs: pt.playingMs, firstFrameMs: pt.firstFrameMs,
      fragLoaded: pt.fragLoaded, playRejected: pt.playRejected, errors: pt.errors, fatal: pt.fatal,
      events: pt.events });
    const shot = path.join(HERE, 'screenshots', `${name}.png`);
    fs.mkdirSync(path.dirname(shot), { recursive: true });
    await page.screenshot({ path: shot });
    res.screenshot = path.relative(process.cwd(), shot);
  } catch (e) {
    // first line of the message only, without Playwright's ANSI-coloured call log
    res.exception = String(e && e.message || e).replace(/\x1b\[[0-9;]*m/g, '').split('\n')[0];
  } finally {
    if (b) await b.close();
  }
  Object.assign(res, { consoleErrors, failedRequests, httpErrors });

  // --- verdict ---
  const why = [];
  const s1 = res.s1 || {}, s2 = res.s2 || {};
  if (res.exception) why.push('exception: ' + res.exception);
  if (res.pageStatus !== undefined && res.pageStatus !== 200) why.push(`player.html HTTP ${res.pageStatus}`);
  if (!res.s2) { res.pass = false; res.why = why.length ? why : ['no playback data']; return res; }
  if (res.fatal) why.push('fatal player/media error: ' + JSON.stringify((res.errors || []).filter(e => e.fatal).slice(0, 2)));

  if (cs.live) {
    const advanced = s2.currentTime - s1.currentTime;
    // a stall shows as currentTime falling behind the wall clock
    if (!(advanced >= LIVE_SECONDS - 1.5)) why.push(`live: currentTime advanced ${advanced.toFixed(2)} s in ${LIVE_SECONDS} s (stall?)`);
    for (const [i, s] of (res.samples || []).entries()) {
      const l = s.live;
      if (!l || l.error) { why.push(`live: no live position at sample ${i} (${JSON.stringify(l)})`); break; }
      if (!(s.currentTime >= l.windowStart - 0.5 && s.currentTime <= l.windowEnd + 0.5)) {
        why.push(`live: currentTime ${s.currentTime.toFixed(2)} outside the DVR window [${l.windowStart}, ${l.windowEnd}] at sample ${i}`); break;
      }
      if (!(l.latency >= 0 && l.latency <= LIVE_MAX_LATENCY)) {
        why.push(`live: ${l.latency} s behind the live edge at sample ${i} (max ${LIVE_MAX_LATENCY})`); break;
      }
    }
    const waits = (res.events || []).filter(e => e.type === 'video:waiting' && e.t > (res.playingMs || 0) + 500);
    if (waits.length) why.push(`live: ${waits.length} stall(s) after playback started`);
  } else {
    const target = cs.vodEnd || playSeconds;
    if (!(s1.currentTime >= target)) why.push(`currentTime ${s1.currentTime} < ${target}` + (res.waitError ? ` (waited)` : ''));
    if (!(s2.currentTime - s1.currentTime > 1.0 || s2.ended)) why.push(`currentTime not advancing (${s1.currentTime} -> ${s2.currentTime})`);
  }
  if (!(s2.totalVideoFrames > 0)) why.push(`no decoded video frames (${s2.totalVideoFrames})`);
  if (!(s2.totalVideoFrames > s1.totalVideoFrames) && !s2.ended) why.push(`decoded frame count not increasing (${s1.totalVideoFrames} -> ${s2.totalVideoFrames})`);
  if (!(s2.frame && s2.frame.std > 20)) why.push(`picture looks blank (${JSON.stringify(s2.frame)})`);
  if (!(s2.audioDecodedBytes > 0)) why.push('no audio decoded');
  if (s2.error) why.push('video.error ' + JSON.stringify(s2.error));
  if (!why.length && httpErrors.length) res.note = `${httpErrors.length} HTTP error responses (non-fatal)`;
  res.pass = why.length === 0;
  res.why = why;
  return res;
}

function fmt(r) {
  const s1 = r.s1 || {}, s2 = r.s2 || {};
  const ct = x => (typeof x === 'number' ? x.toFixed(2) : '?');
  if (!r.s2) return `${r.pass ? 'PASS' : 'FAIL'} ${r.name.padEnd(13)} ${r.lib === 'dashjs' ? 'dash.js' : 'hls.js'} | WHY: ${r.why.join('; ')}`;
  let line = `${r.pass ? 'PASS' : 'FAIL'} ${r.name.padEnd(13)} ${r.lib === 'dashjs' ? 'dash.js' : 'hls.js'} ${r.version || '?'}` +
    ` | currentTime ${ct(s1.currentTime)}->${ct(s2.currentTime)}s frames ${s1.totalVideoFrames}->${s2.totalVideoFrames}` +
    ` dropped ${s2.droppedVideoFrames} ${s2.videoWidth}x${s2.videoHeight} luma ${s2.frame ? `${s2.frame.mean}/${s2.frame.std}` : '?'}` +
    ` audioBytes ${s2.audioDecodedBytes}` +
    ` | playing@${r.playingMs}ms ct>=${playSeconds}s@${r.reachTargetMs}ms errors ${(r.errors || []).length}`;
  if (r.note) line += ` | ${r.note}`;
  if (r.why.length) line += ' | WHY: ' + r.why.join('; ');
  return line;
}

(async () => {
  const results = [];
  for (const n of caseNames) {
    if (!CASES[n].src) { console.log(`SKIP ${n} (no --signed-src)`); continue; }
    const r = await runCase(n);
    results.push(r);
    console.log(fmt(r));
  }
  const logs = path.join(HERE, 'logs');
  fs.mkdirSync(logs, { recursive: true });
  fs.writeFileSync(path.join(logs, 'playback_results.json'), JSON.stringify({ base, results }, null, 1));
  const nPass = results.filter(r => r.pass).length;
  console.log(`${nPass} passed, ${results.length - nPass} failed`);
  process.exit(nPass === results.length ? 0 : 1);
})().catch(e => { console.error(e); process.exit(2); });
