// Browser test of the bisect pages (issue 16): a real `testarena up` bisects three commits of
// the demo firmware (built and booted in QEMU), and the dashboard shows it as a person would
// find it: "Bisects" in the top bar, the list, the bisect's steps linked to their step queues
// (and back), and the first bad commit with its subject and author, markup in the subject
// staying text.
//
//   cd tests/browser && npm ci && node --test bisect.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureScreenshotDir, launchBrowser, newPage, startArena } from './harness.mjs';

const RUN = 240_000; // a whole bisect: three queues (clone, build, boot, test each)

// Passes at the second commit; the third commit makes it wait for a line that never comes.
const PROBE = (expect) => `<scenario name="probe" timeout="120">
  <testcase id="TC_PROBE" name="ping answers" timeout="30">
    <send>ping</send>
    <expect timeout="${expect === 'pong' ? 10 : 1}">^${expect}$</expect>
  </testcase>
</scenario>
`;
const CULPRIT = 'probe: expect <img src=x onerror=alert(1)> instead';

let arena;
let browser;

function commit(repo, message, files) {
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(repo, name)), { recursive: true });
    fs.writeFileSync(path.join(repo, name), text);
  }
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: 'Bisect Tester', GIT_AUTHOR_EMAIL: 'bisect@testarena.invalid',
    GIT_COMMITTER_NAME: 'Bisect Tester', GIT_COMMITTER_EMAIL: 'bisect@testarena.invalid',
    GIT_CONFIG_NOSYSTEM: '1', HOME: repo,
  };
  execFileSync('git', ['add', '-A'], { cwd: repo, env });
  execFileSync('git', ['commit', '-q', '-m', message], { cwd: repo, env });
  return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repo, env, encoding: 'utf8' }).trim();
}

before(async () => {
  arena = await startArena();
  browser = await launchBrowser({ width: 1280, height: 800 });
}, { timeout: 90_000 });

after(async () => {
  await browser?.close();
  const left = (await arena?.stop()) || [];
  assert.deepEqual(left.map((p) => p.cmd), [], 'processes outlived the server (killed now)');
}, { timeout: 60_000 });

test('a bisect is reached from the board, shows its steps and names the first bad commit', { timeout: RUN + 60_000 }, async () => {
  const good = arena.commit;
  const passing = commit(arena.repo, 'probe: a scenario that passes', { 'checks/probe.xml': PROBE('pong') });
  const culprit = commit(arena.repo, CULPRIT, { 'checks/probe.xml': PROBE('never') });
  const started = await arena.api('POST', '/api/v1/bisects', {
    repo: arena.repo, good, bad: 'main', scenarios: ['checks/probe.xml'],
  });
  assert.equal(started.status, 201, started.text);
  const id = started.json.id;

  const { page, check } = await newPage(browser.context);
  await page.goto(`${arena.url}/#/`);
  await page.getByTestId('nav-bisects').click();
  await page.waitForSelector(`[data-testid="bisect-row"][data-id="${id}"]`, { timeout: 30_000 });
  assert.equal(await page.title(), 'Bisects — TestArena');
  await page.locator(`[data-testid="bisect-row"][data-id="${id}"] a`).first().click();
  assert.match(page.url(), new RegExp(`#/bisects/${id}$`));

  // It runs, step by step, and ends with the answer (the page reads it again while it runs).
  await page.waitForFunction(() => {
    const b = document.querySelector('[data-testid="bisect-status"]');
    return b && b.dataset.status === 'found';
  }, null, { timeout: RUN });
  assert.equal(await page.getByTestId('bisect-result-commit').textContent(), culprit);
  assert.equal(await page.getByTestId('bisect-result-subject').textContent(), CULPRIT, 'markup stays text');
  assert.equal(await page.getByTestId('bisect-result-author').textContent(), 'Bisect Tester <bisect@testarena.invalid>');
  assert.equal(await page.getByTestId('bisect-range').textContent(), '2 commits');
  assert.ok(await page.getByTestId('bisect-abort-button').isHidden(), 'nothing to abort once found');
  const verdicts = await page.locator('[data-testid="bisect-step"]').evaluateAll((rows) => rows.map((r) => r.dataset.verdict));
  assert.deepEqual(verdicts, ['good', 'bad']);
  const stepCommits = await page.locator('[data-testid="bisect-step"] td.mono').evaluateAll((tds) => tds.map((t) => t.title));
  assert.deepEqual(stepCommits, [passing, culprit]);
  // The failing step ran twice: two queue links.
  const bad = page.locator('[data-testid="bisect-step"][data-verdict="bad"] [data-testid="bisect-queue-link"]');
  assert.equal(await bad.count(), 2);
  fs.writeFileSync(path.join(ensureScreenshotDir(), 'bisect-found.png'), await page.screenshot({ fullPage: true }));

  // A step queue links back to its bisect.
  await bad.first().click();
  await page.waitForSelector('[data-testid="queue-bisect-link"]:not([hidden])', { timeout: 30_000 });
  assert.equal(await page.getByTestId('queue-bisect-link').textContent(), `step of bisect #${id}`);
  await page.getByTestId('queue-bisect-link').click();
  await page.waitForFunction((id) => document.querySelector('[data-testid="bisect-id"]')?.textContent === `#${id}`
    && !document.querySelector('[data-testid="view-bisect"]').hidden, id, { timeout: 30_000 });
  assert.ok(await page.getByTestId('view-queue').isHidden());

  // The list names the answer too.
  await page.getByTestId('bisects-link').click();
  await page.waitForSelector(`[data-testid="bisect-row"][data-id="${id}"] [data-status="found"]`, { timeout: 30_000 });
  const row = await page.locator(`[data-testid="bisect-row"][data-id="${id}"]`).textContent();
  assert.ok(row.includes(CULPRIT) && row.includes(culprit.slice(0, 8)), row);
  fs.writeFileSync(path.join(ensureScreenshotDir(), 'bisect-list.png'), await page.screenshot());

  // An unknown bisect says so; the board is one click away.
  await page.goto(`${arena.url}/#/bisects/999999`);
  await page.waitForSelector('[data-testid="bisect-page-state"][data-state="missing"]', { timeout: 30_000 });
  await page.getByTestId('home-link').click();
  await page.waitForSelector('[data-testid="view-board"]:not([hidden])');
  assert.ok(await page.getByTestId('view-bisect').isHidden());
  check();
});
