// Test harness: a real `testarena up` on a free port, a local git repository made from the demo
// firmware (plus a hanging and an XSS scenario), and a headless Chromium driven by playwright-core.
//
// Environment:
//   TESTARENA_BIN        the binary (default <repo>/target/debug/testarena)
//   CHROMIUM             the browser (default /usr/bin/chromium)
//   TESTARENA_WEB_FROM_DISK=1   serve web/ from the work tree through a small proxy in front of
//                        the server (to try dashboard changes without rebuilding the binary)
//   KEEP_TMP=1           keep the temporary directory (printed) for a post-mortem

import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const screenshotDir = path.join(repoRoot, 'test-output', 'screenshots');

/** The branch name used by the XSS test: HTML in a valid git ref name. */
export const XSS_BRANCH = 'xss-<b>x</b>';
/** What the XSS scenario makes the firmware print. */
export const XSS_LINE = 'echo <img src=x onerror=alert(1)><script>alert(2)</script>';

const FOREVER_XML = `<scenario name="forever" timeout="600">
  <testcase id="TC_FOREVER" timeout="600">
    <send>hang</send>
    <expect timeout="600">^never$</expect>
  </testcase>
</scenario>
`;

// Added to the default set (scenarios/*.xml, run in sorted order, so after smoke.xml): output
// that keeps coming for a few seconds, to watch the console follow it live.
const STREAM_XML = `<scenario name="stream" timeout="120">
  <testcase id="TC_STREAM" name="slow output streams live" timeout="60">
    <send>slow 40</send>
    <expect timeout="30">^slow done$</expect>
  </testcase>
</scenario>
`;

// One case passes, one fails: for "re-run failed only".
const MIXED_XML = `<scenario name="mixed" timeout="120">
  <testcase id="TC_OK" name="ping answers pong" timeout="20">
    <send>ping</send>
    <expect timeout="5">^pong$</expect>
  </testcase>
  <testcase id="TC_BAD" name="waits for a line that never comes" timeout="20">
    <send>ping</send>
    <expect timeout="1">^no such line$</expect>
  </testcase>
</scenario>
`;

// TC_FLAKY fails on its first try (its <run> leaves a file in the checkout) and passes on its
// second: a flaky case, whose queue passes.
const FLAKY_XML = `<scenario name="flaky" timeout="120">
  <testcase id="TC_FLAKY" name="fails once, then passes" timeout="30" retries="1">
    <run>test -f flaky-flag &amp;&amp; exit 0; touch flaky-flag; exit 1</run>
    <send>ping</send>
    <expect timeout="10">^pong$</expect>
  </testcase>
</scenario>
`;

const XSS_XML = `<scenario name="xss and console rendering" timeout="120">
  <testcase id="TC_XSS" name="markup in console output stays text" timeout="30">
    <send>echo &lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;</send>
    <expect timeout="10">^&lt;img</expect>
  </testcase>
  <testcase id="TC_COLOR" name="ANSI colours" timeout="30">
    <send>color</send>
    <expect timeout="10">green</expect>
  </testcase>
  <testcase id="TC_BYTES" name="bytes that are not UTF-8" timeout="30">
    <send>bytes</send>
    <expect timeout="10">^bytes: </expect>
  </testcase>
</scenario>
`;

function git(cwd, ...args) {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 'TestArena Tests', GIT_AUTHOR_EMAIL: 'tests@testarena.invalid',
      GIT_COMMITTER_NAME: 'TestArena Tests', GIT_COMMITTER_EMAIL: 'tests@testarena.invalid',
      GIT_CONFIG_NOSYSTEM: '1', HOME: cwd,
    },
  }).trim();
}

/** Copies the demo firmware (without build/) into `dest` and makes it a git repo on `main`. */
function makeRepo(dest) {
  const src = path.join(repoRoot, 'examples', 'demo-firmware');
  fs.cpSync(src, dest, {
    recursive: true,
    filter: (p) => {
      const rel = path.relative(src, p);
      return rel !== 'build' && !rel.startsWith('build' + path.sep);
    },
  });
  fs.mkdirSync(path.join(dest, 'checks'), { recursive: true });
  fs.writeFileSync(path.join(dest, 'checks', 'forever.xml'), FOREVER_XML);
  fs.writeFileSync(path.join(dest, 'checks', 'xss.xml'), XSS_XML);
  fs.writeFileSync(path.join(dest, 'checks', 'mixed.xml'), MIXED_XML);
  fs.writeFileSync(path.join(dest, 'checks', 'flaky.xml'), FLAKY_XML);
  fs.writeFileSync(path.join(dest, 'scenarios', 'stream.xml'), STREAM_XML);
  git(dest, 'init', '-q', '-b', 'main');
  git(dest, 'add', '-A');
  git(dest, 'commit', '-q', '-m', 'demo firmware for the browser tests');
  // `git check-ref-format --branch` accepts '<' and '>', so the XSS branch is a real branch.
  git(dest, 'check-ref-format', '--branch', XSS_BRANCH);
  git(dest, 'branch', XSS_BRANCH);
  return git(dest, 'rev-parse', 'HEAD');
}

/** Waits for `testarena listening on http://ADDR` on the child's stdout. */
function waitForListen(child, logFile, timeoutMs) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`testarena did not start within ${timeoutMs} ms; see ${logFile}`)), timeoutMs);
    child.stdout.on('data', (d) => {
      buf += d.toString();
      const m = /testarena listening on (http:\/\/\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`testarena exited (code ${code}, signal ${sig}) before listening; see ${logFile}`));
    });
  });
}

/** Pids of processes (other than the caller) whose cwd or command line is inside `dir`. */
function processesUnder(dir) {
  const found = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cwd = fs.readlinkSync(`/proc/${name}/cwd`);
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cwd === dir || cwd.startsWith(dir + '/') || cmd.includes(dir + '/')) found.push({ pid: Number(name), cmd: cmd.trim() });
    } catch {
      /* gone, or not ours to read */
    }
  }
  return found;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Serves web/ from disk (placeholders filled in like the server does) and proxies the rest. */
function startDiskProxy(target) {
  const webDir = path.join(repoRoot, 'web');
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && (url.pathname === '/' || url.pathname.startsWith('/assets/'))) {
      const files = fs.readdirSync(webDir).filter((f) => fs.statSync(path.join(webDir, f)).isFile());
      if (url.pathname === '/') {
        const v = createHash('sha1');
        for (const f of files.sort()) v.update(fs.readFileSync(path.join(webDir, f)));
        const ver = v.digest('hex').slice(0, 12);
        let page = fs.readFileSync(path.join(webDir, 'index.html'), 'utf8');
        for (const f of files) page = page.replaceAll(`{{${f.toUpperCase().replace(/[.-]/g, '_')}}}`, `/assets/${f}?v=${ver}`);
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' });
        res.end(page);
        return;
      }
      const name = decodeURIComponent(url.pathname.slice('/assets/'.length));
      if (!files.includes(name)) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":{"code":"not_found","message":"no asset"}}');
        return;
      }
      const type = { js: 'text/javascript', css: 'text/css', html: 'text/html', svg: 'image/svg+xml' }[name.split('.').pop()] || 'application/octet-stream';
      res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-cache' });
      res.end(fs.readFileSync(path.join(webDir, name)));
      return;
    }
    const up = http.request({
      host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host },
    }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      res.flushHeaders(); // an event stream must open before its first event
      ur.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
    res.on('close', () => up.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

/**
 * Starts everything. Returns { url, repo, commit, tmp, api(), token(), stop() }.
 * `args` are added to `testarena up` (e.g. ['--auth', 'required']).
 */
export async function startArena({ args = [] } = {}) {
  const bin = path.resolve(repoRoot, process.env.TESTARENA_BIN || path.join('target', 'debug', 'testarena'));
  if (!fs.existsSync(bin)) {
    throw new Error(`testarena binary not found at ${bin}: build it (cargo build -p testarena) or set TESTARENA_BIN`);
  }
  const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'testarena-browser-')));
  const repo = path.join(tmp, 'repo');
  const commit = makeRepo(repo);
  const dataDir = path.join(tmp, 'data');
  const logFile = path.join(tmp, 'testarena.log');
  const log = fs.openSync(logFile, 'a');
  const child = spawn(bin, ['up', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--allow-local-repos', tmp, ...args], {
    cwd: tmp,
    detached: true, // its own process group, so stop() can end it and everything it started
    stdio: ['ignore', 'pipe', log],
    env: { ...process.env, TESTARENA_LOG: process.env.TESTARENA_LOG || 'info' },
  });
  child.stdout.on('data', (d) => fs.appendFileSync(logFile, d));
  let serverUrl;
  try {
    serverUrl = await waitForListen(child, logFile, 30000);
  } catch (e) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    throw e;
  }
  let proxy = null;
  let url = serverUrl;
  if (process.env.TESTARENA_WEB_FROM_DISK === '1') {
    proxy = await startDiskProxy(serverUrl);
    url = proxy.url;
  }

  async function api(method, p, body, bearer) {
    const headers = body ? { 'content-type': 'application/json' } : {};
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    const res = await fetch(serverUrl + p, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    return { status: res.status, json, text, headers: res.headers };
  }

  /** Creates an API token with `testarena token create` (as an admin would); returns it. */
  function token(name, scope) {
    const out = execFileSync(bin, ['token', 'create', '--data-dir', dataDir, '--name', name, '--scope', scope], {
      cwd: tmp, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    });
    const last = out.trim().split('\n').pop().trim().split(/\s+/).pop();
    if (!/^ta_/.test(last)) throw new Error(`no token in the output of token create:\n${out}`);
    return last;
  }

  async function stop() {
    if (proxy) {
      proxy.server.closeAllConnections?.();
      proxy.server.close();
    }
    if (alive(child.pid)) {
      try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 100 && alive(child.pid); i++) await sleep(100);
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    // The worker starts builds and QEMU in process groups of their own; none may outlive it.
    await sleep(200);
    const left = processesUnder(tmp);
    for (const p of left) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    fs.closeSync(log);
    if (process.env.KEEP_TMP === '1') {
      console.log(`# kept ${tmp}`);
    } else {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    return left;
  }

  return { url, serverUrl, repo, commit, tmp, logFile, api, token, stop };
}

/** Launches headless Chromium with a fresh profile. Returns { context, close() }. */
export async function launchBrowser(viewport = { width: 1280, height: 800 }) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'testarena-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A new page that fails the test on any JavaScript dialog (alert from injected markup) or
 * uncaught page error. Call `check()` at the end of the test.
 */
export async function newPage(context, viewport) {
  const page = await context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  const problems = [];
  page.on('dialog', async (d) => {
    problems.push(`a ${d.type()} dialog fired: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource|EventSource|net::ERR/.test(m.text())) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  return {
    page,
    problems,
    check() {
      if (problems.length) throw new Error(problems.join('\n'));
    },
  };
}

export function ensureScreenshotDir() {
  fs.mkdirSync(screenshotDir, { recursive: true });
  return screenshotDir;
}
