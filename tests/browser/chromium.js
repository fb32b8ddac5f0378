'use strict';
// Launching Debian's Chromium for the browser tests (playback, admin UI, missing segment):
// exactly these flags, nothing from Playwright's defaults (ignoreDefaultArgs: true), a fresh
// profile and HOME in a temp dir (so Chromium's NSS db, ~/.pki, is fresh and nothing leaks
// out), and the pipe Playwright talks over.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function chromiumArgs(userDataDir) {
  return ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--ignore-certificate-errors', `--user-data-dir=${userDataDir}`, '--remote-debugging-pipe'];
}

// Starts a browser; `prefix` names its temp dir. Returns { browser, ctx, close }: ctx is
// Chromium's own default context; close() ends the browser and removes the temp dir.
async function launch(prefix) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const udd = path.join(tmp, 'profile'), home = path.join(tmp, 'home');
  fs.mkdirSync(udd); fs.mkdirSync(home);
  const browser = await chromium.launch({ executablePath: CHROMIUM, ignoreDefaultArgs: true,
    args: chromiumArgs(udd), env: { ...process.env, HOME: home }, timeout: 30000 });
  const close = async () => {
    try { await browser.close(); } catch (e) { /* already gone */ }
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  const ctx = browser.contexts()[0] || await browser.newContext();
  return { browser, ctx, close };
}

module.exports = { CHROMIUM, launch };
