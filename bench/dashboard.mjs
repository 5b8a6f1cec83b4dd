// Benchmark 7: how long the dashboard's board takes to show its first page of queues, and
// whether it stays smooth while queues change state.
//
//   node bench/dashboard.mjs --url http://127.0.0.1:PORT/ --runs 5 --chromium /usr/bin/chromium \
//        --profiles DIR --out FILE.json \
//        [--live-url http://127.0.0.1:PORT2/ --live-secs 20 --live-rate 50 \
//         --farm-repo git://… --farm-rate 2 --trace FILE.json --cpu-profile FILE.cpuprofile]
//
// Load: each run launches headless Chromium with a fresh user-data-dir (cold cache), waits 1 s
// for the browser's own start-up work to end, opens the page, and records (in the page,
// relative to navigation start) when the first page of queue rows is in the DOM together with
// the queue count, and the animation frame after that (painted).
//
// Live (with --live-url): one more fresh Chromium opens the board of that server, loads every
// queue ("Load more" until there is no more), goes back to the top with the pointer over the
// rows, then records Chromium's performance timeline
// (CDP tracing) for --live-secs while this script changes the state of --live-rate queues per
// second through the server's API: every 1/rate s it either submits a queue (→ waiting) or
// aborts one of the waiting ones (→ aborted), alternately. With --farm-repo it also submits
// --farm-rate queues per second of that repository, which the server's worker runs for real
// (waiting → running, phases → passed). From the trace: every task of the page's main thread,
// the longest, those over 50 ms, and where their time went (self time by trace event name).
// At the end the board is compared with the API: each of the newest queues must show the
// status the server has.
import { chromium } from 'playwright-core';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function args() {
  const a = { runs: 5, chromium: '/usr/bin/chromium', 'live-secs': 20, 'live-rate': 50, 'farm-rate': 2 };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
  for (const k of ['runs', 'live-secs', 'live-rate', 'farm-rate']) a[k] = Number(a[k]);
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
      // Tells the harness without it polling the page (a poll runs its own script in the page,
      // on the main thread the load is measured on).
      console.debug('bench: painted');
    }));
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, characterData: true });
}

// Runs in the live page before its own scripts: counts the board's `queue` events and keeps
// the Long Tasks API's entries (a cross-check of the trace).
function watchLive() {
  const live = { events: 0, longtasks: [] };
  window.__live = live;
  const ES = window.EventSource;
  window.EventSource = class extends ES {
    constructor(url, init) {
      super(url, init);
      if (String(url).includes('/api/v1/events')) this.addEventListener('queue', () => { live.events++; });
    }
  };
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) live.longtasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  } catch { /* no Long Tasks API */ }
}

const SETTLE_MS = 1000; // after Chromium's start, before the measured load
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-proxy-server'];

async function launch(profiles, tag) {
  const profile = join(profiles, `${tag}-${Date.now()}`);
  mkdirSync(profile, { recursive: true });
  return chromium.launchPersistentContext(profile, {
    executablePath: a.chromium, headless: true, args: FLAGS, viewport: { width: 1400, height: 900 },
  });
}

async function loadRuns() {
  const runs = [];
  for (let i = 0; i < a.runs; i++) {
    const ctx = await launch(a.profiles, `run-${i}`);
    try {
      const page = ctx.pages()[0] || await ctx.newPage();
      // A browser that just started loads its own pages for a moment (Chromium 156 builds its
      // omnibox popup, ~200 module requests, in another renderer); they would compete for the
      // two cores with the page measured. A person's browser is running already.
      await sleep(SETTLE_MS);
      await page.addInitScript(observe);
      const painted = page.waitForEvent('console', { predicate: (m) => m.text() === 'bench: painted', timeout: 30000 });
      await page.goto(a.url, { waitUntil: 'commit', timeout: 30000 });
      await painted;
      const r = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const list = performance.getEntriesByType('resource')
          .filter((e) => /\/api\/v1\/queues\?/.test(e.name))[0];
        const paints = Object.fromEntries(performance.getEntriesByType('paint').map((e) => [e.name, e.startTime]));
        return {
          ...window.__bench,
          response_end: nav ? nav.responseEnd : null,
          dom_content_loaded: nav ? nav.domContentLoadedEventEnd : null,
          load_event: nav ? nav.loadEventEnd : null,
          first_contentful_paint: paints['first-contentful-paint'] ?? null,
          list_url: list ? new URL(list.name).pathname + new URL(list.name).search : null,
          list_api_ms: list ? list.responseEnd - list.startTime : null,
          list_start: list ? list.startTime : null,
          list_end: list ? list.responseEnd : null,
          list_bytes: list ? list.encodedBodySize : null,
        };
      });
      runs.push(r);
      console.log(`dashboard run ${i + 1}: ${r.rows} rows rendered at ${r.rendered.toFixed(0)} ms, `
        + `painted at ${r.painted.toFixed(0)} ms (list request ${r.list_start?.toFixed(0)}–`
        + `${r.list_end?.toFixed(0)} ms)`);
    } finally {
      await ctx.close();
    }
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------
// Live: the API load
// ---------------------------------------------------------------------------------------------

async function apiCall(base, method, path, body) {
  const res = await fetch(new URL(path, base), {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : null;
}

async function waitingIds(base) {
  const ids = [];
  let before = null;
  for (;;) {
    const q = new URLSearchParams({ limit: '500', status: 'waiting' });
    if (before) q.set('before', String(before));
    const page = await apiCall(base, 'GET', `/api/v1/queues?${q}`);
    for (const x of page.queues) if (x.labels && x.labels.length) ids.push(x.id);
    before = page.next;
    if (!before) return ids;
  }
}

/** Changes `rate` queues per second for `secs` (submit / abort alternately), plus farm queues. */
async function drive(base, secs, rate, labels, farmRepo, farmRate) {
  const waiting = await waitingIds(base);
  // Abort in a random order, so changes land all over the board, not only at its top.
  for (let i = waiting.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [waiting[i], waiting[j]] = [waiting[j], waiting[i]];
  }
  const stats = { submitted: 0, aborted: 0, farm_submitted: 0, errors: 0, first_error: null, late_ms: [] };
  const pending = new Set();
  const fire = (p, key) => {
    const t = p.then((r) => { stats[key]++; return r; }).catch((e) => {
      stats.errors++;
      stats.first_error ??= String(e.message || e);
    }).finally(() => pending.delete(t));
    pending.add(t);
  };
  const t0 = performance.now();
  const interval = 1000 / rate;
  const farmEvery = farmRepo && farmRate > 0 ? 1000 / farmRate : Infinity;
  let k = 0;
  let nextFarm = 0;
  let n = 0;
  for (;;) {
    const due = k * interval;
    const now = performance.now() - t0;
    if (due >= secs * 1000) break;
    if (due > now) await sleep(due - now);
    stats.late_ms.push(Math.max(0, performance.now() - t0 - due));
    if (k % 2 === 0 || waiting.length === 0) {
      n++;
      fire(apiCall(base, 'POST', '/api/v1/queues', {
        repo: `https://git.example.com/lab-${n % 5}/firmware-${n % 11}.git`, branch: `live/change-${n}`,
        name: `live change ${n}`, priority: n % 10, labels, scenarios: ['scenarios/smoke.xml'],
      }).then((q) => { waiting.push(q.id); return q; }), 'submitted');
    } else {
      fire(apiCall(base, 'POST', `/api/v1/queues/${waiting.shift()}/abort`), 'aborted');
    }
    while (farmRepo && due >= nextFarm) {
      fire(apiCall(base, 'POST', '/api/v1/queues', { repo: farmRepo, branch: 'main', scenarios: ['bench/farm.xml'] }), 'farm_submitted');
      nextFarm += farmEvery;
    }
    k++;
  }
  const secsTaken = (performance.now() - t0) / 1000;
  await Promise.allSettled([...pending]);
  const late = stats.late_ms.sort((x, y) => x - y);
  stats.late_p99_ms = late.length ? late[Math.floor(0.99 * (late.length - 1))] : 0;
  delete stats.late_ms;
  stats.secs = secsTaken;
  stats.changes_per_s = (stats.submitted + stats.aborted) / secsTaken;
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Live: the trace
// ---------------------------------------------------------------------------------------------

const LONG = 50; // ms: a long task, as the Long Tasks API and DevTools count them

/** The page's main thread in a Chromium trace: the CrRendererMain thread that ran the most script. */
function mainThread(events) {
  const names = new Map();
  for (const e of events) {
    if (e.ph === 'M' && e.name === 'thread_name' && e.args && e.args.name === 'CrRendererMain') {
      names.set(`${e.pid}:${e.tid}`, 0);
    }
  }
  for (const e of events) {
    const key = `${e.pid}:${e.tid}`;
    if (names.has(key) && (e.name === 'FunctionCall' || e.name === 'EventDispatch') && e.dur) {
      names.set(key, names.get(key) + e.dur);
    }
  }
  let best = null;
  for (const [key, n] of names) if (best == null || n > names.get(best)) best = key;
  return best;
}

/** Tasks (top-level RunTask slices), their durations and the self time of what ran inside. */
function analyse(events, windowStartUs, windowEndUs) {
  const key = mainThread(events);
  if (!key) return { error: 'no CrRendererMain thread in the trace' };
  const mine = events.filter((e) => `${e.pid}:${e.tid}` === key && e.ph === 'X' && e.dur != null
    && e.ts >= windowStartUs && e.ts <= windowEndUs);
  mine.sort((x, y) => x.ts - y.ts || y.dur - x.dur);
  const tasks = [];
  let end = -1;
  for (const e of mine) {
    if (e.name !== 'RunTask' && e.name !== 'ThreadControllerImpl::RunTask') continue;
    if (e.ts < end) continue; // nested in the previous task
    tasks.push(e);
    end = e.ts + e.dur;
  }
  // Self time per event name (a slice's thread CPU time less its children's), overall and
  // inside the long tasks (by wall time).
  const self = new Map();
  const selfLong = new Map();
  const longSpans = tasks.filter((t) => t.dur / 1000 > LONG).map((t) => [t.ts, t.ts + t.dur]);
  const inLong = (ts) => longSpans.some(([s, f]) => ts >= s && ts < f);
  const stack = [];
  const close = (upTo) => {
    while (stack.length && stack[stack.length - 1].end <= upTo) {
      const s = stack.pop();
      const own = Math.max(0, s.cpu - s.child);
      const name = s.e.name === 'ThreadControllerImpl::RunTask' ? 'RunTask' : s.e.name;
      self.set(name, (self.get(name) || 0) + own);
      if (inLong(s.e.ts)) selfLong.set(name, (selfLong.get(name) || 0) + own);
      if (stack.length) stack[stack.length - 1].child += s.cpu;
    }
  };
  for (const e of mine) {
    close(e.ts);
    // A slice that does not fit inside its parent (clock rounding) is cut to it.
    const parentEnd = stack.length ? stack[stack.length - 1].end : Infinity;
    const endTs = Math.min(e.ts + e.dur, parentEnd);
    stack.push({ e, end: endTs, cpu: e.tdur ?? e.dur, child: 0 });
  }
  close(Infinity);
  const top = (m) => [...m].sort((x, y) => y[1] - x[1]).slice(0, 12)
    .map(([name, us]) => ({ name, ms: Math.round(us / 10) / 100 }));
  const durs = tasks.map((t) => t.dur / 1000).sort((x, y) => x - y);
  // The thread's own CPU time in each task (`tdur`): what the page's code costs, whatever else
  // the machine was doing (a task's wall time also counts the time its thread waited for a core).
  const cpu = tasks.map((t) => (t.tdur ?? t.dur) / 1000).sort((x, y) => x - y);
  const busy = durs.reduce((s, d) => s + d, 0);
  const pctl = (v, p) => (v.length ? v[Math.floor(p * (v.length - 1))] : 0);
  return {
    tasks: durs.length,
    longest_ms: durs.length ? durs[durs.length - 1] : 0,
    long_tasks: durs.filter((d) => d > LONG).length,
    over_16ms: durs.filter((d) => d > 16.7).length,
    p50_ms: pctl(durs, 0.5),
    p99_ms: pctl(durs, 0.99),
    busy_ms: busy,
    cpu_longest_ms: cpu.length ? cpu[cpu.length - 1] : 0,
    cpu_long_tasks: cpu.filter((d) => d > LONG).length,
    cpu_p99_ms: pctl(cpu, 0.99),
    cpu_busy_ms: cpu.reduce((s, d) => s + d, 0),
    window_ms: (windowEndUs - windowStartUs) / 1000,
    longest: tasks.slice().sort((x, y) => y.dur - x.dur).slice(0, 5)
      .map((t) => ({ at_ms: (t.ts - windowStartUs) / 1000, ms: t.dur / 1000, cpu_ms: (t.tdur ?? t.dur) / 1000 })),
    self_time: top(self),
    self_time_in_long_tasks: top(selfLong),
  };
}

/** The functions that took the most time (self) in a CDP CPU profile, in ms. */
function topFunctions(profile, n = 15) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((x) => [x.id, x]));
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const f = node.callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url.split('/').pop().split('?')[0]}:${f.lineNumber + 1}`;
    self.set(name, (self.get(name) || 0) + (profile.timeDeltas[i] || 0) / 1000);
  }
  return [...self].sort((x, y) => y[1] - x[1]).slice(0, n).map(([name, ms]) => ({ name, ms: Math.round(ms * 10) / 10 }));
}

async function trace(page, fn) {
  const cdp = await page.context().newCDPSession(page);
  if (a['cpu-profile']) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
  }
  const events = [];
  cdp.on('Tracing.dataCollected', (e) => { for (const x of e.value) events.push(x); });
  const complete = new Promise((r) => cdp.once('Tracing.tracingComplete', r));
  await cdp.send('Tracing.start', {
    transferMode: 'ReportEvents',
    traceConfig: {
      recordMode: 'recordContinuously',
      includedCategories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'toplevel',
        'v8.execute', 'blink', 'blink.user_timing', '__metadata'],
    },
  });
  // Clock of the trace (µs): a mark made in the page at the start and at the end.
  await page.evaluate(() => performance.mark('live-start'));
  const result = await fn();
  await page.evaluate(() => performance.mark('live-end'));
  if (a['cpu-profile']) {
    const { profile } = await cdp.send('Profiler.stop');
    writeFileSync(a['cpu-profile'], JSON.stringify(profile));
    console.log('dashboard live: JS self time (ms):', topFunctions(profile).map((x) => `${x.name} ${x.ms}`).join('; '));
  }
  await cdp.send('Tracing.end');
  await complete;
  await cdp.detach();
  const mark = (n) => events.find((e) => e.name === n && e.ph !== 'M');
  return { result, events, start: mark('live-start')?.ts, end: mark('live-end')?.ts };
}

/** CPU time (ms, user + system) used so far by the live processes descended from this one
 * (Chromium's browser, renderer, GPU and utility processes), from /proc. */
function childrenCpuMs() {
  const parent = new Map();
  const cpu = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(name), Number(f[1]));
      cpu.set(Number(name), (Number(f[11]) + Number(f[12])) * 10); // clock ticks (USER_HZ 100)
    } catch { /* gone */ }
  }
  let total = 0;
  for (const [pid, ms] of cpu) {
    let p = parent.get(pid);
    while (p && p !== process.pid) p = parent.get(p);
    if (p === process.pid) total += ms;
  }
  return total;
}

async function live() {
  const base = a['live-url'];
  const ctx = await launch(a.profiles, 'live');
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    await page.addInitScript(watchLive);
    // Generous timeouts: the machine may be busy with other work (then the figures say so).
    await page.goto(base, { waitUntil: 'load', timeout: 120000 });
    await page.waitForSelector('[data-testid^="queue-row-"]', { timeout: 120000 });
    const loadMore = page.getByTestId('load-more');
    const t0 = Date.now();
    while (await loadMore.isVisible()) {
      const before = await page.locator('.qrow').count();
      // Through the DOM: the rows above are laid out as they scroll into view, so on a busy
      // machine the button can move between Playwright's aim and its click (seen in a full run).
      await loadMore.dispatchEvent('click');
      await page.waitForFunction((n) => document.querySelectorAll('.qrow').length > n, before, { timeout: 120000 })
        .catch(async (e) => {
          const state = await page.evaluate(() => ({
            rows: document.querySelectorAll('.qrow').length,
            count: document.querySelector('[data-testid="queue-count"]').textContent,
            more: document.querySelector('[data-testid="load-more"]').outerHTML,
          }));
          throw new Error(`"Load more" added no row (${JSON.stringify(state)}): ${e.message}`);
        });
    }
    const rowsBefore = await page.locator('.qrow').count();
    const loadAllMs = Date.now() - t0;
    // Watch the top of the board, where new queues appear, with the pointer over the rows (as
    // a person does: hovering makes the browser hit-test the rows after every change).
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.mouse.move(500, 600);
    await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 120000 });
    await sleep(1000);
    const labels = ['bench-no-worker'];
    const eventsBefore = await page.evaluate(() => window.__live.events);
    const ltBefore = await page.evaluate(() => window.__live.longtasks.length);
    const cpu0 = { chromium: childrenCpuMs(), self: process.cpuUsage(), at: performance.now() };
    const t = await trace(page, async () => {
      const load = await drive(base, a['live-secs'], a['live-rate'], labels, a['farm-repo'], a['farm-rate']);
      await sleep(1500); // the last changes' events arrive (the server polls every 250 ms)
      return load;
    });
    const wallMs = performance.now() - cpu0.at;
    const own = process.cpuUsage(cpu0.self);
    // Share of one core while traced (the collection of the trace included).
    const cpuShare = {
      chromium: (100 * (childrenCpuMs() - cpu0.chromium)) / wallMs,
      harness: (100 * (own.user + own.system)) / 1000 / wallMs,
    };
    if (a.trace) writeFileSync(a.trace, JSON.stringify({ traceEvents: t.events }));
    const stats = t.start && t.end ? analyse(t.events, t.start, t.end) : { error: 'no marks in the trace' };
    const inPage = await page.evaluate(({ e0, l0 }) => ({
      events: window.__live.events - e0,
      longtasks: window.__live.longtasks.slice(l0),
      rows: document.querySelectorAll('.qrow').length,
    }), { e0: eventsBefore, l0: ltBefore });
    // The board against the API: the newest queues' statuses (after the last events arrived).
    await sleep(1500);
    // A queue the worker is running may change between the API's answer and the look at the
    // board: only a status the API gave before and after the look counts.
    const newest = (await apiCall(base, 'GET', '/api/v1/queues?limit=300')).queues;
    const shown = await page.evaluate((ids) => ids.map((id) => {
      const b = document.querySelector(`[data-testid="status-${id}"]`);
      return b ? b.dataset.status : null;
    }), newest.map((q) => q.id));
    const again = new Map((await apiCall(base, 'GET', '/api/v1/queues?limit=300')).queues.map((q) => [q.id, q.status]));
    const mismatches = newest.map((q, i) => ({ id: q.id, api: q.status, board: shown[i] }))
      .filter((m) => m.api !== m.board && again.get(m.id) === m.api);
    const farm = a['farm-repo']
      ? (await apiCall(base, 'GET', '/api/v1/queues?limit=500')).queues.filter((q) => q.repo === a['farm-repo'])
      : [];
    const out = {
      rows_before: rowsBefore,
      load_all_ms: loadAllMs,
      load: t.result,
      events_received: inPage.events,
      rows_after: inPage.rows,
      longtask_api: { count: inPage.longtasks.length, longest_ms: Math.max(0, ...inPage.longtasks.map((x) => x.duration)) },
      trace: stats,
      cpu_share: cpuShare,
      checked: newest.length,
      mismatches: mismatches.slice(0, 10),
      mismatch_count: mismatches.length,
      farm_passed: farm.filter((q) => q.status === 'passed').length,
      farm_other: farm.filter((q) => q.status !== 'passed').map((q) => q.status),
    };
    console.log(`dashboard live: ${rowsBefore} rows; ${out.load.submitted} submitted + ${out.load.aborted} aborted `
      + `in ${out.load.secs.toFixed(1)} s (${out.load.changes_per_s.toFixed(1)}/s), ${out.load.farm_submitted} farm queues; `
      + `${out.events_received} events; longest task ${stats.longest_ms?.toFixed(1)} ms, `
      + `${stats.long_tasks} > ${LONG} ms (Long Tasks API: ${out.longtask_api.count}); by CPU time: `
      + `longest ${stats.cpu_longest_ms?.toFixed(1)} ms, ${stats.cpu_long_tasks} > ${LONG} ms, busy ${stats.cpu_busy_ms?.toFixed(0)} ms; `
      + `${out.mismatch_count} of ${out.checked} rows differ from the API`);
    return out;
  } finally {
    await ctx.close();
  }
}

const a = args();
const out = { runs: await loadRuns() };
if (a['live-url']) out.live = await live();
writeFileSync(a.out, JSON.stringify(out, null, 1));
