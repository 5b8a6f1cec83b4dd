// Browser tests of a case's history on the dashboard (issue 16): the strip of each case's last
// results on the queue page, the flaky badge, "compare with previous", and the board's "got
// worse" filter. A real `testarena up` runs queues of a small repository whose "emulator" is a
// shell script (no build, no QEMU): it answers each command from the commit's `passing.txt`,
// except `flaky`, whose answer a file outside the repository decides (shown to the sandbox with
// --sandbox-path), so one commit can pass and fail.
//
//   cd tests/browser && npm ci && node --test history.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureScreenshotDir, launchBrowser, newPage, startArena } from './harness.mjs';

const WAIT = 60_000;

let arena;
let browser;
let flipDir; // holds `flaky`: "ok" or "bad"
const runs = {}; // name -> { id, commit }

const SCENARIO = `<scenario name="history" timeout="60">
  <fail-pattern>-bad$</fail-pattern>
  <testcase id="TC_STABLE" timeout="20"><send>stable</send><expect timeout="10">^stable-ok$</expect></testcase>
  <testcase id="TC_FLAKY" timeout="20"><send>flaky</send><expect timeout="10">^flaky-ok$</expect></testcase>
  <testcase id="TC_WORSE" timeout="20"><send>worse</send><expect timeout="10">^worse-ok$</expect></testcase>
</scenario>
`;

function git(cwd, ...args) {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 'T', GIT_AUTHOR_EMAIL: 't@testarena.invalid',
      GIT_COMMITTER_NAME: 'T', GIT_COMMITTER_EMAIL: 't@testarena.invalid',
      GIT_CONFIG_NOSYSTEM: '1', HOME: cwd,
    },
  }).trim();
}

/** The repository: `stable` and `worse` pass on the first commit. */
function makeRepo(dir) {
  fs.mkdirSync(path.join(dir, 'scenarios'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'testarena.toml'), '[emulator]\ncommand = "sh emu.sh"\nconsole = "stdio"\n');
  fs.writeFileSync(path.join(dir, 'emu.sh'), `while read -r cmd; do
  if [ "$cmd" = flaky ]; then
    if grep -qx ok '${flipDir}/flaky'; then echo flaky-ok; else echo flaky-bad; fi
  elif grep -qx "$cmd" passing.txt; then echo "$cmd-ok"; else echo "$cmd-bad"; fi
done
`);
  fs.writeFileSync(path.join(dir, 'scenarios', 'history.xml'), SCENARIO);
  fs.writeFileSync(path.join(dir, 'passing.txt'), 'stable\nworse\n');
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'first');
  return git(dir, 'rev-parse', 'HEAD');
}

/** Runs a queue of `main` to its end; returns its id. */
async function run(repo, status) {
  const made = await arena.api('POST', '/api/v1/queues', { repo, branch: 'main' });
  assert.equal(made.status, 201, made.text);
  const id = made.json.id;
  const until = Date.now() + 90_000;
  for (;;) {
    const q = (await arena.api('GET', `/api/v1/queues/${id}`)).json;
    if (['passed', 'failed', 'error', 'aborted'].includes(q.status)) {
      assert.equal(q.status, status, JSON.stringify(q));
      return id;
    }
    assert.ok(Date.now() < until, `queue ${id} did not finish: ${JSON.stringify(q)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  flipDir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'testarena-flip-')));
  fs.writeFileSync(path.join(flipDir, 'flaky'), 'ok\n');
  arena = await startArena({ args: ['--sandbox-path', flipDir] });
  browser = await launchBrowser({ width: 1280, height: 800 });
  const repo = path.join(arena.tmp, 'history-repo');
  const c1 = makeRepo(repo);
  // q1: everything passes. q2, same commit: TC_FLAKY fails (flaky on c1; worse than q1).
  runs.q1 = { id: await run(repo, 'passed'), commit: c1 };
  fs.writeFileSync(path.join(flipDir, 'flaky'), 'bad\n');
  runs.q2 = { id: await run(repo, 'failed'), commit: c1 };
  // q3, a new commit: TC_WORSE fails now (worse than q2), TC_FLAKY passes again.
  fs.writeFileSync(path.join(flipDir, 'flaky'), 'ok\n');
  fs.writeFileSync(path.join(repo, 'passing.txt'), 'stable\n');
  git(repo, 'commit', '-q', '-am', 'worse');
  const c2 = git(repo, 'rev-parse', 'HEAD');
  runs.q3 = { id: await run(repo, 'failed'), commit: c2 };
}, { timeout: 240_000 });

after(async () => {
  await browser?.close();
  const left = (await arena?.stop()) || [];
  if (flipDir) fs.rmSync(flipDir, { recursive: true, force: true });
  assert.deepEqual(left.map((p) => p.cmd), [], 'processes outlived the server (killed now)');
}, { timeout: 60_000 });

/** `#rrggbb` as the browser writes a computed colour. */
function rgb(hex) {
  const n = Number.parseInt(hex.trim().slice(1), 16);
  return `rgb(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255})`;
}

test('1. the queue page shows each case\'s last results as a strip, and a flaky badge where a commit passed and failed', { timeout: 90_000 }, async () => {
  const { page, check } = await newPage(browser.context);
  const { q1, q2, q3 } = runs;
  await page.goto(`${arena.url}/#/queues/${q3.id}`);
  const row = (id) => page.locator(`[data-testid="case-row"][data-case="${id}"]`);
  await row('TC_FLAKY').locator('[data-testid="history-strip"]').waitFor({ timeout: WAIT });

  const boxes = (id) => row(id).locator('[data-testid="history-box"]').evaluateAll((els) => els.map((e) => ({
    status: e.dataset.status, queue: Number(e.dataset.queue), title: e.title, href: e.getAttribute('href'),
    current: e.classList.contains('current'), color: getComputedStyle(e).backgroundColor,
  })));
  // Oldest left, newest (this queue) right; one box per result.
  const flaky = await boxes('TC_FLAKY');
  assert.deepEqual(flaky.map((b) => [b.queue, b.status]), [[q1.id, 'passed'], [q2.id, 'failed'], [q3.id, 'passed']]);
  assert.equal(await row('TC_FLAKY').locator('[data-testid="history-strip"]').getAttribute('data-count'), '3');
  assert.deepEqual(flaky.map((b) => b.current), [false, false, true]);
  assert.equal(flaky[1].title, `${q2.commit.slice(0, 8)} · failed · queue #${q2.id}`);
  assert.equal(flaky[0].href, `#/queues/${q1.id}`);
  // Colours per verdict: the dashboard's own passed and failed colours.
  const colour = (name) => page.evaluate((n) => getComputedStyle(document.documentElement).getPropertyValue(n), name);
  assert.equal(flaky[0].color, rgb(await colour('--c-passed')));
  assert.equal(flaky[1].color, rgb(await colour('--c-failed')));
  assert.equal(flaky[2].color, flaky[0].color);
  const worse = await boxes('TC_WORSE');
  assert.deepEqual(worse.map((b) => b.status), ['passed', 'passed', 'failed']);
  assert.equal(worse[2].color, rgb(await colour('--c-failed')));
  assert.deepEqual((await boxes('TC_STABLE')).map((b) => b.status), ['passed', 'passed', 'passed']);

  // The flaky badge: only the case that passed and failed on one commit (c1).
  assert.equal(await row('TC_FLAKY').getByTestId('flaky-badge').count(), 1);
  assert.equal(await row('TC_WORSE').getByTestId('flaky-badge').count(), 0);
  assert.equal(await row('TC_STABLE').getByTestId('flaky-badge').count(), 0);
  assert.equal(await row('TC_STABLE').getByTestId('history-rate').textContent(), '100% passed');
  await page.getByTestId('tasks').screenshot({ path: path.join(ensureScreenshotDir(), 'history-strips.png') });

  // An older queue's strip ends at that queue.
  await row('TC_FLAKY').locator(`[data-testid="history-box"][data-queue="${q1.id}"]`).click();
  await page.waitForFunction((id) => location.hash === `#/queues/${id}`, q1.id);
  await page.waitForFunction((id) => {
    const boxes = document.querySelectorAll('[data-case="TC_FLAKY"] [data-testid="history-box"]');
    return boxes.length === 1 && Number(boxes[0].dataset.queue) === id;
  }, q1.id, { timeout: WAIT });
  assert.equal(await row('TC_FLAKY').getByTestId('flaky-badge').count(), 0);
  check();
  await page.close();
});

test('2. "compare with previous" lists what got worse and what got better since the last run', { timeout: 60_000 }, async () => {
  const { page, check } = await newPage(browser.context);
  const { q2, q3 } = runs;
  await page.goto(`${arena.url}/#/queues/${q3.id}`);
  await page.getByTestId('compare-button').click();
  const panel = page.getByTestId('compare-panel');
  await panel.getByTestId('compare-newly-failing').waitFor({ timeout: WAIT });
  assert.equal(await page.getByTestId('compare-button').getAttribute('aria-expanded'), 'true');
  assert.match(await panel.getByTestId('compare-base').textContent(), new RegExp(`queue #${q2.id} \\(main ${q2.commit.slice(0, 8)}, failed\\)`));
  const cases = (group) => panel.getByTestId(group).locator('[data-testid="compare-case"]')
    .evaluateAll((els) => els.map((e) => e.dataset.case));
  assert.deepEqual(await cases('compare-newly-failing'), ['TC_WORSE']);
  assert.deepEqual(await cases('compare-newly-passing'), ['TC_FLAKY']);
  assert.equal(await panel.getByTestId('compare-still-failing').count(), 0);
  const worse = panel.locator('[data-testid="compare-case"][data-case="TC_WORSE"]');
  assert.match(await worse.textContent(), /passed → failed/);
  assert.match(await worse.textContent(), /worse-bad/, 'the failure message');
  await page.locator('.qcard').screenshot({ path: path.join(ensureScreenshotDir(), 'history-compare.png') });
  // Closed again with the same button; the first run has nothing before it.
  await page.getByTestId('compare-button').click();
  assert.equal(await panel.isHidden(), true);
  await page.goto(`${arena.url}/#/queues/${runs.q1.id}`);
  await page.getByTestId('queue-status').waitFor({ timeout: WAIT });
  await page.getByTestId('compare-button').click();
  await panel.getByTestId('compare-none').waitFor({ timeout: WAIT });
  assert.match(await panel.getByTestId('compare-none').textContent(), /No earlier finished run/);
  check();
  await page.close();
});

test('3. the board\'s "got worse" filter shows only queues with a case worse than in the run before', { timeout: 60_000 }, async () => {
  const { page, check } = await newPage(browser.context);
  const { q1, q2, q3 } = runs;
  await page.goto(`${arena.url}/#/`);
  await page.getByTestId(`queue-row-${q1.id}`).waitFor({ timeout: WAIT });
  assert.match(await page.getByTestId(`worse-${q3.id}`).textContent(), /1 worse/);
  assert.equal(await page.getByTestId(`worse-${q1.id}`).count(), 0);

  const [resp] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/queues' && new URL(r.url()).searchParams.get('worse') === 'true'),
    page.getByTestId('filter-worse').check(),
  ]);
  assert.equal(resp.status(), 200);
  await page.waitForFunction((id) => !document.querySelector(`[data-testid="queue-row-${id}"]`), q1.id, { timeout: WAIT });
  const shown = await page.$$eval('.qrow', (rows) => rows.map((r) => Number(r.dataset.id)));
  assert.deepEqual(shown, [q3.id, q2.id]);
  assert.match(await page.getByTestId('queue-count').textContent(), /2 shown/);
  await page.locator('.board-main').screenshot({ path: path.join(ensureScreenshotDir(), 'history-board-worse.png') });

  await page.getByTestId('filter-worse').uncheck();
  await page.getByTestId(`queue-row-${q1.id}`).waitFor({ timeout: WAIT });
  check();
  await page.close();
});
