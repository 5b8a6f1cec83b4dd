// Browser tests of signing in: a real `testarena up --auth required` with tokens made by
// `testarena token create`, driven through headless Chromium.
//
//   cd tests/browser && npm ci && node --test auth.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPage, startArena } from './harness.mjs';

const WAIT = 60_000;

let arena;
let browser;
let tokens;

before(async () => {
  arena = await startArena({ args: ['--auth', 'required'] });
  tokens = {
    reader: arena.token('reader', 'read'),
    dev: arena.token('dev', 'submit'),
    boss: arena.token('boss', 'admin'),
  };
  browser = await launchBrowser({ width: 1280, height: 800 });
}, { timeout: 90_000 });

after(async () => {
  await browser?.close();
  const left = (await arena?.stop()) || [];
  assert.deepEqual(left.map((p) => p.cmd), [], 'processes outlived the server (killed now)');
}, { timeout: 60_000 });

async function openBoard(page) {
  await page.goto(`${arena.url}/#/`);
  await page.waitForSelector('[data-testid="board-state"]:is([data-state="ok"], [data-state="empty"])', {
    state: 'attached', timeout: WAIT,
  });
  await page.waitForSelector('[data-testid="session"]:not([hidden])', { timeout: WAIT });
}

async function signIn(page, token) {
  await page.getByTestId('sign-in-button').click();
  await page.getByTestId('sign-in-token').fill(token);
  const [resp] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/session' && r.request().method() === 'POST'),
    page.getByTestId('sign-in-submit').click(),
  ]);
  return resp;
}

async function whoText(page) {
  return (await page.getByTestId('session-who').textContent()).trim();
}

/** A queue submitted through the API with `bearer`: hangs, so it can be aborted. */
async function hangingQueue(bearer) {
  const r = await arena.api('POST', '/api/v1/queues',
    { repo: arena.repo, branch: 'main', scenarios: ['checks/forever.xml'] }, bearer);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

test('anonymous visitors read the board; writes are disabled with the reason', async () => {
  const { page, check } = await newPage(browser.context);
  try {
    await openBoard(page);
    assert.equal(await whoText(page), 'Not signed in');
    const submit = page.getByTestId('submit-button');
    assert.equal(await submit.isDisabled(), true);
    assert.match(await submit.getAttribute('title'), /Sign in with a token of scope submit/);
    assert.match(await page.getByTestId('submit-denied').textContent(), /scope submit/);
    // The server refuses an anonymous write whatever the page shows.
    const r = await page.evaluate(async () => {
      const res = await fetch('/api/v1/queues', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      return { status: res.status, body: await res.json() };
    });
    assert.equal(r.status, 401);
    assert.equal(r.body.error.code, 'unauthorized');
    check();
  } finally {
    await page.close();
  }
});

test('a bad token is refused in the sign-in dialog', async () => {
  const { page, check } = await newPage(browser.context);
  try {
    await openBoard(page);
    const resp = await signIn(page, 'ta_0_not-a-real-token');
    assert.equal(resp.status(), 401);
    await page.waitForSelector('[data-testid="sign-in-error"]:not([hidden])');
    assert.match(await page.getByTestId('sign-in-error').textContent(), /not valid/);
    await page.getByTestId('sign-in-cancel').click();
    assert.equal(await whoText(page), 'Not signed in');
    check();
  } finally {
    await page.close();
  }
});

test('signed in with a submit token: HttpOnly cookie, CSRF-safe writes, own queues only', async () => {
  const { page, check } = await newPage(browser.context);
  try {
    await openBoard(page);
    const resp = await signIn(page, tokens.dev);
    assert.equal(resp.status(), 200);
    await page.waitForSelector('[data-testid="sign-out-button"]:not([hidden])');
    assert.equal(await whoText(page), 'dev · submit');
    // The token is in an HttpOnly, SameSite=Strict cookie: not readable by the page's scripts,
    // and not in its storage.
    const cookies = await browser.context.cookies(arena.url);
    const c = cookies.find((k) => k.name === 'testarena_session');
    assert.ok(c, `no session cookie in ${JSON.stringify(cookies.map((k) => k.name))}`);
    assert.equal(c.httpOnly, true);
    assert.equal(c.sameSite, 'Strict');
    const seen = await page.evaluate(() => ({
      cookie: document.cookie, local: JSON.stringify(localStorage), sess: JSON.stringify(sessionStorage),
    }));
    for (const v of Object.values(seen)) assert.ok(!v.includes(tokens.dev), `token visible to scripts: ${v}`);
    assert.equal(await page.getByTestId('submit-button').isDisabled(), false);

    // CSRF: a write carried only by the cookie (as a forged form or script would send it) is
    // refused; with the page's CSRF token it passes.
    const body = JSON.stringify({ repo: arena.repo, branch: 'main', scenarios: ['checks/forever.xml'] });
    const forged = await page.evaluate(async (body) => {
      const res = await fetch('/api/v1/queues', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: res.status, body: await res.json() };
    }, body);
    assert.equal(forged.status, 403, JSON.stringify(forged));
    assert.equal(forged.body.error.code, 'csrf');

    // Submit through the form: the queue records who submitted it.
    await page.getByLabel('Repository').fill(arena.repo);
    await page.getByLabel('Branch').fill('main');
    await page.getByLabel(/^Scenarios/).fill('checks/forever.xml');
    const [created] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/queues' && r.request().method() === 'POST'),
      page.getByTestId('submit-button').click(),
    ]);
    assert.equal(created.status(), 201, await created.text());
    const mine = await created.json();
    assert.equal(mine.submitted_by, 'dev');

    // Its page: submitter shown; abort allowed (own queue), delete disabled with the reason.
    await page.goto(`${arena.url}/#/queues/${mine.id}`);
    await page.waitForFunction(() => document.querySelector('[data-testid="queue-submitter"]').textContent === 'dev',
      null, { timeout: WAIT });
    const del = page.getByTestId('delete-button');
    assert.equal(await del.isDisabled(), true);
    assert.match(await del.getAttribute('title'), /scope admin/);
    assert.equal(await page.getByTestId('abort-button').isDisabled(), false);

    // Someone else's queue: abort needs admin.
    const theirs = await hangingQueue(tokens.boss);
    await page.goto(`${arena.url}/#/queues/${theirs.id}`);
    await page.waitForFunction(() => document.querySelector('[data-testid="queue-submitter"]').textContent === 'boss',
      null, { timeout: WAIT });
    assert.equal(await page.getByTestId('abort-button').isDisabled(), true);
    assert.match(await page.getByTestId('abort-button').getAttribute('title'), /scope admin/);

    // Abort the own one from the page (through the confirm dialog; the request carries the CSRF token).
    await page.goto(`${arena.url}/#/queues/${mine.id}`);
    await page.waitForFunction(() => document.querySelector('[data-testid="queue-submitter"]').textContent === 'dev',
      null, { timeout: WAIT });
    await page.getByTestId('abort-button').click();
    const [aborted] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/queues/${mine.id}/abort`),
      page.getByTestId('confirm-ok').click(),
    ]);
    assert.equal(aborted.status(), 200, await aborted.text());

    // Sign out: the cookie is gone and writes are disabled again.
    await page.getByTestId('sign-out-button').click();
    await page.waitForSelector('[data-testid="sign-in-button"]:not([hidden])');
    assert.equal(await whoText(page), 'Not signed in');
    const after = await browser.context.cookies(arena.url);
    assert.ok(!after.some((k) => k.name === 'testarena_session' && k.value), JSON.stringify(after));
    assert.equal(await page.getByTestId('abort-button').isDisabled(), true);
    await arena.api('POST', `/api/v1/queues/${theirs.id}/abort`, null, tokens.boss);
    check();
  } finally {
    await page.close();
  }
});

test('an admin deletes; a read token cannot submit', async () => {
  const { page, check } = await newPage(browser.context);
  try {
    await openBoard(page);
    await signIn(page, tokens.reader);
    await page.waitForSelector('[data-testid="sign-out-button"]:not([hidden])');
    assert.equal(await whoText(page), 'reader · read');
    assert.equal(await page.getByTestId('submit-button').isDisabled(), true);
    assert.match(await page.getByTestId('submit-button').getAttribute('title'), /has scope read; to submit queues you need scope submit/);
    await page.getByTestId('sign-out-button').click();
    await page.waitForSelector('[data-testid="sign-in-button"]:not([hidden])');

    await signIn(page, tokens.boss);
    await page.waitForSelector('[data-testid="sign-out-button"]:not([hidden])');
    const q = await hangingQueue(tokens.dev);
    await page.goto(`${arena.url}/#/queues/${q.id}`);
    await page.waitForFunction(() => document.querySelector('[data-testid="queue-submitter"]').textContent === 'dev',
      null, { timeout: WAIT });
    assert.equal(await page.getByTestId('delete-button').isDisabled(), false);
    await page.getByTestId('delete-button').click();
    const [deleted] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/queues/${q.id}` && r.request().method() === 'DELETE'),
      page.getByTestId('confirm-ok').click(),
    ]);
    assert.equal(deleted.status(), 204);
    await page.getByTestId('sign-out-button').click();
    await page.waitForSelector('[data-testid="sign-in-button"]:not([hidden])');
    check();
  } finally {
    await page.close();
  }
});
