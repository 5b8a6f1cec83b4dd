// Benchmark 7: how long the dashboard's board takes to show its first page of queues.
//
//   node bench/dashboard.mjs --url http://127.0.0.1:PORT/ --runs 5 --chromium /usr/bin/chromium \
//        --profiles DIR --out FILE.json
//
// Each run launches headless Chromium with a fresh user-data-dir (cold cache), opens the page,
// and records (in the page, relative to navigation start) when the first page of queue rows is
// in the DOM together with the queue count, and the animation frame after that (painted).
import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function args() {
  const a = { runs: 5, chromium: '/usr/bin/chromium' };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
  a.runs = Number(a.runs);
  if (!a.url || !a.out || !a.profiles) throw new Error('need --url, --profiles and --out');
  return a;
}

// Runs in the page before its own scripts.
function observe() {
  const rowsSel = '[data-testid^="queue-row-"]';
  const check = () => {
    if (window.__bench) return;
    const count = document.querySelector('[data-testid="queue-count"]');
    const rows = document.querySelectorAll(rowsSel).length;
    if (!count || count.textContent.trim() === '' || rows === 0) return;
    const rendered = performance.now();
    window.__bench = { rendered, rows, count_text: count.textContent.trim() };
    // The frame that paints these rows runs its rAF callbacks first; the next one is after it.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      window.__bench.painted = performance.now();
    }));
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, characterData: true });
}

const a = args();
const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-proxy-server'];
const runs = [];
for (let i = 0; i < a.runs; i++) {
  const profile = join(a.profiles, `run-${i}-${Date.now()}`);
  mkdirSync(profile, { recursive: true });
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: a.chromium, headless: true, args: flags, viewport: { width: 1400, height: 900 },
  });
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    await page.addInitScript(observe);
    await page.goto(a.url, { waitUntil: 'commit', timeout: 30000 });
    await page.waitForFunction(() => window.__bench && window.__bench.painted, null,
      { timeout: 30000, polling: 50 });
    const r = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const list = performance.getEntriesByType('resource')
        .filter((e) => /\/api\/v1\/queues\?/.test(e.name))[0];
      return {
        ...window.__bench,
        response_end: nav ? nav.responseEnd : null,
        dom_content_loaded: nav ? nav.domContentLoadedEventEnd : null,
        load_event: nav ? nav.loadEventEnd : null,
        list_url: list ? new URL(list.name).pathname + new URL(list.name).search : null,
        list_api_ms: list ? list.responseEnd - list.startTime : null,
        list_start: list ? list.startTime : null,
        list_bytes: list ? list.encodedBodySize : null,
      };
    });
    runs.push(r);
    console.log(`dashboard run ${i + 1}: ${r.rows} rows rendered at ${r.rendered.toFixed(0)} ms, `
      + `painted at ${r.painted.toFixed(0)} ms (list request ${r.list_api_ms?.toFixed(0)} ms)`);
  } finally {
    await ctx.close();
  }
}
writeFileSync(a.out, JSON.stringify({ runs }, null, 1));
