// TestArena dashboard: a single-page app on the REST API and its server-sent events.
// Plain ES module, no dependencies. Every piece of data reaches the DOM through textContent or
// attributes set one by one — never through innerHTML — so a branch called `<script>` stays text.

const API = '/api/v1';
const PAGE_SIZE = 100; // index.html preloads the first page: the same number there
const MAX_CONSOLE_LINES = 20000;
// What the server defines (once, in its core crate) and puts into the page: see
// crates/server/src/assets.rs, `limits_json`.
const LIMITS = JSON.parse(document.querySelector('meta[name="testarena-limits"]').content);
const WORKER_ALIVE_SECONDS = LIMITS.worker_alive_seconds;
const LOG_CHUNK = LIMITS.log_chunk;
const STATUSES = LIMITS.queue_statuses;
const FINISHED = new Set(LIMITS.finished_statuses);
const FORM_FIELDS = ['repo', 'branch', 'scenarios', 'priority', 'name'];

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);

// The page's own elements (static in index.html), found once: a query by attribute walks the
// document, and with 1,000 rows on the board that is ~30,000 elements per look-up.
const tidCache = new Map();
/** The element with `data-testid="id"` (inside `root` when given). */
function tid(id, root) {
  if (root) return root.querySelector(`[data-testid="${id}"]`);
  let e = tidCache.get(id);
  if (e && e.isConnected) return e;
  e = document.querySelector(`[data-testid="${id}"]`);
  if (e) tidCache.set(id, e);
  return e;
}

/** Creates an element; `props` sets className, text, dataset, attributes; children are nodes or strings. */
function h(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const k in props) {
      const v = props[k];
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'testid') e.setAttribute('data-testid', v);
      else if (k === 'style') e.style.cssText = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Fetches JSON from the API; throws HttpError with the API's `{"error":{code,message}}`, or TypeError offline. */
async function api(path, opts = {}) {
  // A GET sends no header of its own: the board's first page is preloaded by index.html, and
  // the browser reuses a preloaded answer only for a request with the same headers.
  const init = { method: opts.method || 'GET', headers: {} };
  // Writes made with the session cookie carry its CSRF token (a bearer token needs none).
  if (init.method !== 'GET' && session.csrf) init.headers['x-csrf-token'] = session.csrf;
  if (opts.body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  const res = await fetch(API + path, init);
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.status === 401 && session.signed_in && path !== '/session') {
    // The token was revoked or expired meanwhile: show the page as signed out.
    loadSession();
  }
  if (!res.ok) {
    const err = data && data.error;
    throw new HttpError(res.status, err ? err.code : 'http_' + res.status,
      err ? err.message : `the server answered ${res.status} ${res.statusText}`.trim());
  }
  return data;
}

function isOffline(e) {
  return !(e instanceof HttpError);
}

function parseTime(s) {
  if (!s) return null;
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
}

/** "42s", "5m 03s", "2h 10m", "3d 4h" */
function fmtDuration(ms) {
  if (ms == null || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** Case durations: "850 ms", "3.2 s", "1m 05s". */
function fmtCaseDuration(ms) {
  if (ms == null) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return fmtDuration(ms);
}

function fmtAge(t, now = Date.now()) {
  if (t == null) return '—';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ago`;
  return `${Math.floor(hr / 24)}d ago`;
}

// Made on first use: building a DateTimeFormat loads locale data (~10-30 ms), which the
// board's first paint does not need.
let dateFmt = null;
function fmtDateTime(t) {
  if (t == null) return '';
  dateFmt ??= new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  return dateFmt.format(t);
}

/** How long a queue ran (or has been running). */
function queueDuration(q, now = Date.now()) {
  const start = parseTime(q.started_at);
  if (start == null) return null;
  const end = parseTime(q.finished_at);
  return (end ?? now) - start;
}

function shortRepo(repo) {
  let r = String(repo || '').replace(/^[a-z+]+:\/\//i, '').replace(/\.git$/, '').replace(/\/+$/, '');
  const parts = r.split('/').filter(Boolean);
  if (parts.length > 2) r = '…/' + parts.slice(-2).join('/');
  return r;
}

function shortSha(sha) {
  return sha ? sha.slice(0, 8) : '';
}

function casesDone(sum) {
  return sum.passed + (sum.flaky || 0) + sum.failed + sum.error + sum.skipped;
}

/** A finished queue's verdict with its flaky cases ("passed, 2 flaky"); the status alone otherwise. */
function verdictText(q) {
  const n = (q.summary && q.summary.flaky) || 0;
  return n && FINISHED.has(q.status) ? `${q.status}, ${n} flaky` : q.status;
}

function debounce(fn, ms) {
  let t = 0;
  return (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}

// ---------------------------------------------------------------------------------------------
// Toasts, connection pill, confirm modal
// ---------------------------------------------------------------------------------------------

function toast(message, kind = 'info', link) {
  const box = tid('toasts');
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', testid: 'toast' },
    h('span', { text: message }));
  if (link) t.append(' ', h('a', { href: link.href, text: link.text }));
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', text: '×' });
  close.addEventListener('click', () => t.remove());
  t.append(close);
  box.append(t);
  setTimeout(() => t.classList.add('leaving'), kind === 'error' ? 9000 : 5000);
  setTimeout(() => t.remove(), kind === 'error' ? 9400 : 5400);
}

const conn = {
  events: 'connecting', // connecting | live | reconnecting | polling
  set(state) {
    this.events = state;
    const pill = tid('connection');
    pill.dataset.state = state;
    $('.conn-text', pill).textContent = {
      connecting: 'Connecting…',
      live: 'Live',
      reconnecting: 'Reconnecting…',
      polling: 'Polling',
      paused: 'Paused',
      offline: 'Server unreachable',
    }[state] || state;
    pill.title = {
      live: 'Updates arrive as they happen',
      reconnecting: 'The live connection dropped; retrying',
      polling: 'Live events are not available; refreshing every few seconds',
      offline: 'Cannot reach the server; retrying',
    }[state] || '';
  },
};

/** Shows the confirm modal; resolves true when the user confirms. */
function confirmDialog({ title, body, ok = 'OK', danger = true }) {
  const dlg = tid('confirm-dialog');
  tid('confirm-title', dlg).textContent = title;
  tid('confirm-body', dlg).textContent = body;
  const okBtn = tid('confirm-ok', dlg);
  okBtn.textContent = ok;
  okBtn.className = 'btn ' + (danger ? 'danger' : 'primary');
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
    tid('confirm-cancel', dlg).focus();
  });
}

// ---------------------------------------------------------------------------------------------
// Session: who is signed in, and what that allows
// ---------------------------------------------------------------------------------------------

/** GET /api/v1/session's answer. The token itself lives in an HttpOnly cookie this script
 * cannot read; the page only knows the name, the scope and the CSRF token for its writes. */
const session = { known: false, auth: 'off', anonymous_read: true, signed_in: false, name: null, scope: null, csrf: null };
const SCOPE_RANK = { read: 1, submit: 2, admin: 3 };
const ACTION_TEXT = {
  submit: 'submit queues', abort: 'abort this queue', delete: 'delete queues',
  rerun: 're-run queues', 'rerun-failed': 're-run queues',
};

/** The scope `action` needs (on queue `q`): aborting one's own queue needs only submit. */
function scopeNeeded(action, q) {
  if (action === 'delete') return 'admin';
  if (action === 'abort') {
    return q && session.name && q.submitted_by === session.name ? 'submit' : 'admin';
  }
  return 'submit';
}

/** Why the visitor may not do `action` (on queue `q`), or '' when they may (the server checks
 * again; this only keeps buttons honest). */
function deniedReason(action, q) {
  if (!session.known) return '';
  const need = scopeNeeded(action, q);
  if ((SCOPE_RANK[session.scope] || 0) >= SCOPE_RANK[need]) return '';
  const what = ACTION_TEXT[action] || action;
  const alt = action === 'abort' ? ' (or the token that submitted it)' : '';
  if (!session.signed_in) return `Sign in with a token of scope ${need}${alt} to ${what}.`;
  return `Your token “${session.name}” has scope ${session.scope}; to ${what} you need scope ${need}${alt}.`;
}

async function loadSession() {
  try {
    const s = await api('/session');
    Object.assign(session, s, { known: true });
  } catch {
    return; // offline: keep what was known
  }
  renderSession();
}

function renderSession() {
  const box = tid('session');
  box.hidden = session.auth !== 'required' && !session.signed_in;
  const who = tid('session-who');
  who.replaceChildren();
  if (session.signed_in) {
    who.append(h('b', { text: session.name }), ` · ${session.scope}`);
    who.title = `Signed in as ${session.name} (scope ${session.scope})`;
  } else {
    who.textContent = session.anonymous_read ? 'Not signed in' : 'Sign in to see the queues';
    who.title = '';
  }
  tid('sign-in-button').hidden = session.signed_in;
  tid('sign-out-button').hidden = !session.signed_in;
  const reason = deniedReason('submit');
  const btn = tid('submit-button');
  btn.disabled = !!reason;
  btn.title = reason;
  const note = tid('submit-denied');
  note.hidden = !reason;
  note.textContent = reason;
  if (page.queue) renderQueue(page.queue);
}

function openSignIn() {
  const dlg = tid('sign-in-dialog');
  const form = tid('sign-in-form', dlg);
  form.reset();
  tid('sign-in-error', dlg).hidden = true;
  dlg.showModal();
  tid('sign-in-token', dlg).focus();
}

async function onSignIn(ev) {
  ev.preventDefault();
  const dlg = tid('sign-in-dialog');
  const input = tid('sign-in-token', dlg);
  const err = tid('sign-in-error', dlg);
  const btn = tid('sign-in-submit', dlg);
  btn.disabled = true;
  try {
    await api('/session', { method: 'POST', body: { token: input.value.trim() } });
    input.value = '';
    dlg.close();
    await afterSessionChange();
    toast(`Signed in as ${session.name} (${session.scope}).`, 'ok');
  } catch (e) {
    err.textContent = isOffline(e) ? 'Cannot reach the server — try again in a moment.'
      : e.status === 401 ? 'This token is not valid (unknown, revoked or expired).' : e.message;
    err.hidden = false;
  } finally {
    btn.disabled = false;
  }
}

async function onSignOut() {
  try {
    await api('/session', { method: 'DELETE' });
  } catch (e) {
    toast(isOffline(e) ? 'Cannot reach the server — try again in a moment.' : e.message, 'error');
    return;
  }
  await afterSessionChange();
  toast('Signed out.');
}

/** Reads the session again and everything the visitor may now see differently. */
async function afterSessionChange() {
  await loadSession();
  loadBoard();
  if (page.id) fetchQueue(page.id);
}

// ---------------------------------------------------------------------------------------------
// Status badges and progress
// ---------------------------------------------------------------------------------------------

const STATUS_ICON = {
  waiting: '◷', running: '●', passed: '✓', failed: '✗', error: '!', aborted: '■',
  pending: '○', skipped: '–', flaky: '↻',
};

function badge(status, testid) {
  return h('span', { class: `badge s-${status}`, testid, 'data-status': status },
    h('span', { class: 'icon', 'aria-hidden': 'true', text: STATUS_ICON[status] || '?' }),
    h('span', { class: 'label', text: status }));
}

function setBadge(e, status) {
  e.className = `badge s-${status}`;
  e.dataset.status = status;
  e.replaceChildren(
    h('span', { class: 'icon', 'aria-hidden': 'true', text: STATUS_ICON[status] || '?' }),
    h('span', { class: 'label', text: status }));
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

const board = {
  queues: new Map(), // id -> Queue, the loaded window of the list
  rows: new Map(), // id -> row element currently in the DOM
  next: null, // cursor for "load more"; null when the oldest queue is loaded
  status: '', // server-side status filter
  worse: false, // server-side "got worse" filter (queues with regressions)
  text: '', // client-side search
  loaded: false,
  loading: false,
  error: null,
  started: false,
  gen: 0, // bumps on every reload, so stale answers are dropped
  batching: false, // applying a batch of live events: the state line is updated once, after
};

const page = {
  id: null, // queue shown on the queue page
  queue: null,
  log: null, // LiveLog
  busy: false,
  openMessages: new Set(), // unfolded case messages ("task/case"), kept across live re-renders
  openRepro: new Set(), // open "Repro" panels ("task/case"), kept across live re-renders
  history: null, // the cases' strips of the queue shown (see "History" below)
  compare: null, // the "compare with previous" view of the queue shown
};

// ---------------------------------------------------------------------------------------------
// Board
// ---------------------------------------------------------------------------------------------

function matchesText(q, text) {
  if (!text) return true;
  const hay = `#${q.id} ${q.name} ${q.repo} ${q.branch} ${q.commit || ''} ${q.status} ${q.phase || ''} ${q.worker || ''} ${q.submitted_by || ''}`.toLowerCase();
  return text.split(/\s+/).every((w) => hay.includes(w));
}

function visible(q) {
  return (!board.status || q.status === board.status) && (!board.worse || gotWorse(q))
    && matchesText(q, board.text);
}

/** Whether a queue belongs in the loaded window (newer than the oldest loaded, or everything is loaded). */
function inWindow(id) {
  if (board.next == null) return true;
  let min = Infinity;
  for (const k of board.queues.keys()) if (k < min) min = k;
  return id >= min;
}

/** The skeleton every board row is cloned from (cloning is several times faster than building). */
let rowTemplate = null;
function getRowTemplate() {
  if (rowTemplate) return rowTemplate;
  rowTemplate = h('div', { class: 'qrow', role: 'listitem' },
    h('div', { class: 'c-status' },
      h('span', { class: 'badge' }, h('span', { class: 'icon', 'aria-hidden': 'true' }), h('span', { class: 'label' }))),
    h('div', { class: 'c-main' },
      h('a', { class: 'qname' }, h('span', { class: 'qid' }), h('span', { class: 'name' })),
      h('div', { class: 'qmeta' },
        h('span', { class: 'branch' }, h('span', { class: 'glyph', 'aria-hidden': 'true', text: '⎇' }), ''),
        h('code', { class: 'sha' }),
        h('span', { class: 'repo' }))),
    h('div', { class: 'c-prio' }, h('span', { class: 'prio' })),
    h('div', { class: 'c-progress' },
      h('div', { class: 'bar', role: 'presentation' }),
      h('span', { class: 'pcount', title: 'cases finished / total' }),
      h('span', { class: 'counts' })),
    h('div', { class: 'c-time' }, h('span', { class: 'age' }), h('span', { class: 'dur', title: 'duration' })));
  return rowTemplate;
}

const EMPTY_SUMMARY = { total: 0, passed: 0, failed: 0, error: 0, skipped: 0, flaky: 0 };
const COUNT_KINDS = [['passed', 'pass', '✓'], ['flaky', 'flaky', '↻'], ['failed', 'fail', '✗'], ['error', 'err', '!'], ['skipped', 'skip', '–']];

/** Everything a board row shows of `q`: a row whose signature did not change is kept as it is. */
function rowSignature(q) {
  const sum = q.summary || EMPTY_SUMMARY;
  return [q.status, q.phase, q.abort_requested, q.error, q.name, q.branch, q.commit, q.repo,
    q.submitted_by, q.priority, q.created_at, q.started_at, q.finished_at, waitingReason(q),
    sum.total, sum.passed, sum.failed, sum.error, sum.skipped, sum.flaky, q.regressions].join('\u0000');
}

function buildRow(q, now, sig = rowSignature(q)) {
  const id = q.id;
  const sum = q.summary || EMPTY_SUMMARY;
  const created = parseTime(q.created_at);
  const row = getRowTemplate().cloneNode(true);
  row._sig = sig;
  row.className = `qrow s-${q.status}`;
  row.setAttribute('data-testid', `queue-row-${id}`);
  row.dataset.id = id;
  row.dataset.status = q.status;
  const [statusCell, main, prioCell, progress, time] = row.children;

  const badgeEl = statusCell.firstChild;
  badgeEl.className = `badge s-${q.status}`;
  badgeEl.setAttribute('data-testid', `status-${id}`);
  badgeEl.dataset.status = q.status;
  badgeEl.firstChild.textContent = STATUS_ICON[q.status] || '?';
  badgeEl.lastChild.textContent = q.status;
  if (q.error) badgeEl.title = q.error;
  else if (verdictText(q) !== q.status) badgeEl.title = verdictText(q);
  if (q.phase && q.status === 'running') {
    statusCell.append(h('span', { class: q.abort_requested ? 'phase warn' : 'phase', testid: `phase-${id}`,
      text: q.abort_requested ? 'aborting…' : q.phase }));
  } else if (q.abort_requested && !FINISHED.has(q.status)) {
    statusCell.append(h('span', { class: 'phase warn', testid: `phase-${id}`, text: 'aborting…' }));
  } else if (sum.flaky && FINISHED.has(q.status)) {
    statusCell.append(h('span', { class: 'phase flaky', testid: `flaky-${id}`,
      title: 'cases that failed, then passed when tried again', text: `${sum.flaky} flaky` }));
  } else {
    const why = waitingReason(q);
    if (why) statusCell.append(h('span', { class: 'phase warn', testid: `waiting-reason-${id}`, title: why, text: why }));
  }
  if (gotWorse(q)) statusCell.append(worseBadge(q));

  const link = main.firstChild;
  link.href = `#/queues/${id}`;
  link.setAttribute('data-testid', `queue-link-${id}`);
  link.firstChild.textContent = `#${id}`;
  link.lastChild.textContent = q.name;
  const [branch, sha, repo] = main.lastChild.children;
  branch.setAttribute('data-testid', `branch-${id}`);
  branch.title = `branch ${q.branch}`;
  branch.lastChild.data = q.branch;
  if (q.commit) {
    sha.textContent = shortSha(q.commit);
    sha.title = q.commit;
  } else {
    sha.remove();
  }
  repo.textContent = shortRepo(q.repo);
  repo.title = q.repo;
  if (q.submitted_by) {
    main.lastChild.append(h('span', { class: 'by', testid: `by-${id}`,
      title: `submitted with the API token ${q.submitted_by}`, text: `by ${q.submitted_by}` }));
  }

  const prio = prioCell.firstChild;
  prio.className = `prio p${q.priority}`;
  prio.title = `Priority ${q.priority} (0–9, higher runs first)`;
  prio.textContent = `P${q.priority}`;

  progress.setAttribute('data-testid', `progress-${id}`);
  const [bar, pcount, counts] = progress.children;
  const total = sum.total || 0;
  for (const [k, cls, sym] of COUNT_KINDS) {
    const n = sum[k];
    if (!n) continue;
    if (total > 0) {
      const seg = document.createElement('i');
      seg.className = cls;
      seg.style.width = `${(100 * n) / total}%`;
      bar.append(seg);
    }
    const c = document.createElement('span');
    c.className = `n-${cls}`;
    c.title = k;
    c.textContent = `${sym}${n}`;
    counts.append(c);
  }
  pcount.textContent = total ? `${casesDone(sum)}/${total}` : '—';

  const [ageEl, durEl] = time.children;
  const dur = queueDuration(q, now);
  durEl.setAttribute('data-testid', `duration-${id}`);
  durEl.textContent = dur == null ? '' : fmtDuration(dur);
  ageEl.textContent = fmtAge(created, now);
  row._age = ageEl;
  row._dur = durEl;
  row._created = created;
  row._ageText = ageEl.textContent;
  row._durText = durEl.textContent;
  return row;
}

/** The row for `q`: the one on the board when it still shows the same, else a new one. */
function rowFor(q, now) {
  const sig = rowSignature(q);
  const old = board.rows.get(q.id);
  return old && old._sig === sig ? old : buildRow(q, now, sig);
}

function updateCount() {
  const n = board.rows.size;
  const loaded = board.queues.size;
  let text = `${loaded} loaded`;
  if (board.text || board.status || board.worse) text = `${n} shown · ${loaded} loaded`;
  if (board.next != null) text += ' · more available';
  setText(tid('queue-count'), board.loaded ? text : '');
}

/** Sets an element's text unless it already reads so (a write is a DOM change even when equal). */
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function setBoardState() {
  if (board.batching) return; // once, when the batch is applied
  const box = tid('board-state');
  let state = 'ok';
  let message = '';
  let curl = null;
  if (!board.loaded && board.error) {
    state = 'error';
    message = board.error;
  } else if (!board.loaded) {
    state = 'loading';
    message = 'Loading queues…';
  } else if (board.queues.size === 0 && !board.status) {
    state = 'empty';
    message = 'No queues yet — submit one with the form, or from a shell:';
    curl = `curl -X POST ${location.origin}${API}/queues -H 'content-type: application/json' -d '{"repo":"https://git.example.com/fw.git","branch":"main"}'`;
  } else if (board.queues.size === 0 && board.worse) {
    state = 'empty';
    message = `No ${board.status ? `${board.status} ` : ''}queue has a case that got worse than in the run before it.`;
  } else if (board.queues.size === 0) {
    state = 'empty';
    message = `No ${board.status} queues. Choose “All” to see every queue.`;
  } else if (board.rows.size === 0) {
    state = 'empty';
    message = board.next != null
      ? 'Nothing loaded matches the search. Load more to search older queues, or clear the search.'
      : 'No queue matches the search.';
  }
  const key = `${state}\u0000${message}\u0000${curl}`;
  if (box._key !== key) {
    box._key = key;
    const textEl = $('.state-text', box);
    const spin = $('.spinner', box);
    box.replaceChildren(spin, textEl);
    if (curl) box.append(h('code', { class: 'cmd', testid: 'empty-curl', text: curl }));
    box.dataset.state = state;
    box.hidden = state === 'ok';
    spin.hidden = state !== 'loading';
    textEl.textContent = message;
  }
  const more = tid('load-more');
  const moreHidden = !board.loaded || board.next == null;
  if (more.hidden !== moreHidden) more.hidden = moreHidden;
  updateCount();
}

// The list is made of chunks of rows, and a chunk off screen is skipped by the browser
// (`content-visibility: auto` in style.css): a change then costs style, layout and paint of the
// chunks in view, not of 1,000 rows. With the rows themselves skipped one by one, each frame with
// a change still walked every row (layout, pre-paint, the visibility observer: ~10 ms a frame
// for 1,000 rows, against ~3 ms with chunks). Small chunks: the browser renders every chunk
// near the view whole, and with 25 rows a chunk (up to 50 before a split) a frame painted about
// twice the rows it does with 10 (benchmark 7: paint 1.1 s → 0.43 s of CPU in 20 s).
const CHUNK = 10; // rows per chunk as built; a chunk that grows to twice that is split
const ROW_HEIGHT = 58; // px: a row's height, the size of a chunk not rendered yet

function newChunk() {
  const c = document.createElement('div');
  c.className = 'qchunk';
  c.setAttribute('role', 'none');
  return c;
}

/** Tells the browser how tall the chunk would be, for a chunk never rendered yet (a rendered
 * one remembers its real size: `auto`). */
function sizeChunk(c) {
  c.style.containIntrinsicSize = `auto ${c.childElementCount * ROW_HEIGHT}px`;
}

/** Rows in new chunks, appended to `parent` (the list, or a fragment). */
function appendChunked(parent, rows) {
  let chunk = null;
  for (const row of rows) {
    if (!chunk || chunk.childElementCount >= CHUNK) {
      if (chunk) sizeChunk(chunk);
      chunk = newChunk();
      parent.append(chunk);
    }
    chunk.append(row);
  }
  if (chunk) sizeChunk(chunk);
}

/** Removes a row from its chunk, and the chunk when it is left empty. */
function removeRow(row) {
  const chunk = row.parentNode;
  row.remove();
  if (!chunk || !chunk.classList.contains('qchunk')) return;
  if (chunk.childElementCount === 0) chunk.remove();
  else sizeChunk(chunk);
}

/** Inserts a new row before the first row with a smaller id (newest first). */
function insertRow(row, id) {
  const list = tid('queue-list');
  let chunk = null;
  for (const c of list.children) {
    const last = c.lastElementChild;
    if (last && Number(last.dataset.id) < id) {
      chunk = c;
      break;
    }
  }
  if (!chunk) {
    // Older than every row: at the end.
    const last = list.lastElementChild;
    if (last && last.childElementCount < 2 * CHUNK) {
      last.append(row);
      sizeChunk(last);
    } else {
      appendChunked(list, [row]);
    }
    return;
  }
  let before = chunk.firstElementChild;
  while (Number(before.dataset.id) > id) before = before.nextElementSibling;
  chunk.insertBefore(row, before);
  if (chunk.childElementCount >= 2 * CHUNK) {
    // Split: the older half moves into a chunk of its own after this one.
    const rest = newChunk();
    while (chunk.childElementCount > CHUNK) rest.prepend(chunk.lastElementChild);
    chunk.after(rest);
    sizeChunk(rest);
  }
  sizeChunk(chunk);
}

/** Renders every visible loaded queue at once (initial load, search, filter change); keeps the
 * rows that still show the same unless `rebuild`. */
function renderBoard(rebuild = false) {
  const list = tid('queue-list');
  const ids = [...board.queues.keys()].sort((a, b) => b - a);
  const now = Date.now();
  const rows = new Map();
  for (const id of ids) {
    const q = board.queues.get(id);
    if (!visible(q)) continue;
    rows.set(id, rebuild ? buildRow(q, now) : rowFor(q, now));
  }
  board.rows = rows;
  const frag = document.createDocumentFragment();
  appendChunked(frag, rows.values());
  list.replaceChildren(frag);
  setBoardState();
}

/** Appends one page of older queues below the current rows. */
function appendPage(queues) {
  const list = tid('queue-list');
  const now = Date.now();
  const rows = [];
  for (const q of queues) {
    if (board.queues.has(q.id)) continue;
    board.queues.set(q.id, q);
    if (!visible(q)) continue;
    const row = buildRow(q, now);
    board.rows.set(q.id, row);
    rows.push(row);
  }
  const frag = document.createDocumentFragment();
  appendChunked(frag, rows);
  list.append(frag);
  setBoardState();
}

/** Adds or replaces one queue's row in place, keeping newest-first order. */
function upsertQueue(q) {
  if ((board.status && q.status !== board.status) || (board.worse && !gotWorse(q))) {
    removeQueue(q.id);
    return;
  }
  if (!board.queues.has(q.id) && !inWindow(q.id)) return;
  board.queues.set(q.id, q);
  if (!board.loaded) return;
  const old = board.rows.get(q.id);
  if (!visible(q)) {
    if (old) {
      removeRow(old);
      board.rows.delete(q.id);
      setBoardState();
    }
    return;
  }
  const row = rowFor(q, Date.now());
  if (row === old) return;
  if (old) {
    old.replaceWith(row);
  } else {
    insertRow(row, q.id);
    markFresh(row);
  }
  board.rows.set(q.id, row);
  setBoardState();
}

function removeQueue(id) {
  board.queues.delete(id);
  const row = board.rows.get(id);
  if (row) {
    removeRow(row);
    board.rows.delete(id);
  }
  if (board.loaded) setBoardState();
}

async function loadBoard() {
  const gen = ++board.gen;
  board.loading = true;
  try {
    const qs = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (board.status) qs.set('status', board.status);
    if (board.worse) qs.set('worse', 'true');
    const data = await api(`/queues?${qs}`);
    if (gen !== board.gen) return;
    board.queues.clear();
    for (const q of data.queues) board.queues.set(q.id, q);
    board.next = data.next ?? null;
    board.loaded = true;
    board.error = null;
    renderBoard();
  } catch (e) {
    if (gen !== board.gen) return;
    board.error = isOffline(e)
      ? 'Cannot reach the server — retrying…'
      : e.status === 401 ? 'Sign in to see the queues: this server shows them only to signed-in users.'
        : `The server could not list queues: ${e.message} — retrying…`;
    if (board.loaded) toast(board.error, 'error');
    else setBoardState();
    setTimeout(() => { if (gen === board.gen) loadBoard(); }, 3000);
  } finally {
    if (gen === board.gen) board.loading = false;
  }
}

/** Re-reads the newest page and merges it (after a reconnect, or when polling). */
async function refreshBoard() {
  if (!board.loaded || board.loading) return;
  const gen = board.gen;
  try {
    const qs = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (board.status) qs.set('status', board.status);
    if (board.worse) qs.set('worse', 'true');
    const data = await api(`/queues?${qs}`);
    if (gen !== board.gen) return;
    const seen = new Set(data.queues.map((q) => q.id));
    if (data.queues.length) {
      const min = Math.min(...seen);
      for (const id of [...board.queues.keys()]) if (id >= min && !seen.has(id)) removeQueue(id);
    } else {
      for (const id of [...board.queues.keys()]) removeQueue(id);
    }
    if (data.next == null && board.queues.size <= data.queues.length) board.next = null;
    for (const q of data.queues) upsertQueue(q);
    setBoardState();
  } catch {
    /* the next poll or reconnect tries again */
  }
}

async function loadMore() {
  if (board.next == null || board.loading) return;
  const btn = tid('load-more');
  btn.disabled = true;
  btn.textContent = 'Loading…';
  const gen = board.gen;
  try {
    const qs = new URLSearchParams({ limit: String(PAGE_SIZE), before: String(board.next) });
    if (board.status) qs.set('status', board.status);
    if (board.worse) qs.set('worse', 'true');
    const data = await api(`/queues?${qs}`);
    if (gen !== board.gen) return;
    board.next = data.next ?? null;
    appendPage(data.queues);
  } catch (e) {
    toast(isOffline(e) ? 'Cannot reach the server — try again in a moment.' : e.message, 'error');
  } finally {
    btn.disabled = false;
    btn.textContent = 'Load more';
  }
}

function setStatusFilter(status) {
  if (status === board.status) return;
  board.status = status;
  for (const c of document.querySelectorAll('[data-testid="status-filter"] .chip')) {
    c.setAttribute('aria-pressed', String(c.dataset.status === status));
  }
  board.loaded = false;
  board.error = null;
  tid('queue-list').replaceChildren();
  board.rows.clear();
  setBoardState();
  loadBoard();
}

/** Shows only the queues with a case that got worse than in the run before them (or all). */
function setWorseFilter(on) {
  if (on === board.worse) return;
  board.worse = on;
  tid('filter-worse').checked = on;
  board.loaded = false;
  board.error = null;
  tid('queue-list').replaceChildren();
  board.rows.clear();
  setBoardState();
  loadBoard();
}

// A new row is lit for FRESH_MS (style.css: a still tint; a fading one kept the compositor busy).
// The lights go off together, at most every 100 ms, so that they add few frames of their own.
const FRESH_MS = 1500;
const lit = { rows: new Map(), timer: 0 }; // row -> when it was lit (performance.now())

function markFresh(row) {
  row.classList.add('fresh');
  lit.rows.set(row, performance.now());
  if (!lit.timer) lit.timer = setTimeout(dimFresh, FRESH_MS);
}

function dimFresh() {
  lit.timer = 0;
  const now = performance.now();
  for (const [row, at] of lit.rows) {
    const left = at + FRESH_MS - now;
    if (left > 0) {
      // Lit in order: the rest are newer.
      lit.timer = setTimeout(dimFresh, Math.max(left, 100));
      return;
    }
    row.classList.remove('fresh');
    lit.rows.delete(row);
  }
}

/** Updates ticking durations (every second, running queues only) and ages (every 15 s). */
function tickBoard(all) {
  const now = Date.now();
  for (const [id, row] of board.rows) {
    const q = board.queues.get(id);
    if (!q) continue;
    if (q.status === 'running') {
      const d = queueDuration(q, now);
      const text = d == null ? '' : fmtDuration(d);
      if (row._durText !== text) row._dur.textContent = row._durText = text;
    }
    if (all) {
      const text = fmtAge(row._created, now);
      if (row._ageText !== text) row._age.textContent = row._ageText = text;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Submit form
// ---------------------------------------------------------------------------------------------

function splitScenarios(text) {
  return text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
}

function clearFormErrors(form) {
  for (const f of FORM_FIELDS) {
    const err = tid(`field-error-${f}`, form);
    err.hidden = true;
    err.textContent = '';
    form.elements[f].removeAttribute('aria-invalid');
  }
  const fe = tid('form-error', form);
  fe.hidden = true;
  fe.textContent = '';
}

/** Shows an API validation message under the field it names ("branch: must not …"). */
function showFormError(form, message) {
  const m = /^([a-z_]+)(\[(\d+)\])?:\s*([\s\S]*)$/.exec(message || '');
  if (m && FORM_FIELDS.includes(m[1])) {
    const field = m[1];
    const err = tid(`field-error-${field}`, form);
    let text = m[4] || message;
    if (m[3] != null) {
      const list = splitScenarios(form.elements.scenarios.value);
      const which = list[Number(m[3])];
      text = `${which != null ? `“${which}”` : `entry ${Number(m[3]) + 1}`}: ${text}`;
    }
    err.textContent = text;
    err.hidden = false;
    const input = form.elements[field];
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  const fe = tid('form-error', form);
  fe.textContent = message;
  fe.hidden = false;
}

async function onSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearFormErrors(form);
  const body = {
    repo: form.elements.repo.value.trim(),
    branch: form.elements.branch.value.trim(),
    priority: Number(form.elements.priority.value),
  };
  const scenarios = splitScenarios(form.elements.scenarios.value);
  if (scenarios.length) body.scenarios = scenarios;
  const name = form.elements.name.value.trim();
  if (name) body.name = name;
  const btn = tid('submit-button', form);
  btn.disabled = true;
  btn.textContent = 'Submitting…';
  try {
    const q = await api('/queues', { method: 'POST', body });
    try {
      localStorage.setItem('testarena.repo', body.repo);
      localStorage.setItem('testarena.branch', body.branch);
    } catch { /* private mode */ }
    form.elements.name.value = '';
    upsertQueue(q);
    toast(`Queue #${q.id} submitted.`, 'ok', { href: `#/queues/${q.id}`, text: 'Open it' });
  } catch (e) {
    if (isOffline(e)) showFormError(form, 'Cannot reach the server — check that testarena is running, then try again.');
    else showFormError(form, e.message);
  } finally {
    btn.disabled = !!deniedReason('submit');
    btn.textContent = 'Submit queue';
  }
}

// ---------------------------------------------------------------------------------------------
// Workers panel
// ---------------------------------------------------------------------------------------------

const workers = { list: null, error: null, timer: 0 };

/** Whether a worker's heartbeat is recent enough to count it alive. */
function workerAlive(w, now = Date.now()) {
  const beat = parseTime(w.heartbeat_at);
  return beat != null && now - beat < WORKER_ALIVE_SECONDS * 1000;
}

/** Where a queue's build came from when it reused one from its worker's build cache (a link to the queue that built it). */
function showBuild(el, q) {
  const from = q.build && q.build.cached_from;
  el.replaceChildren();
  if (from != null) {
    el.append('cached from ', h('a', { href: `#/queues/${from}`, text: `queue #${from}` }));
  } else {
    el.textContent = q.no_cache ? 'no cache asked for' : '—';
  }
}

/**
 * Why a waiting queue waits when no live worker can take it (it asks for labels none has), or
 * null. From the workers list when it is loaded (fresher), else the server's `waiting_reason`.
 */
function waitingReason(q) {
  if (q.status !== 'waiting') return null;
  if (workers.list == null) return q.waiting_reason || null;
  const labels = q.labels || [];
  const fits = workers.list.some((w) => workerAlive(w) && labels.every((l) => (w.labels || []).includes(l)));
  if (fits) return null;
  return labels.length ? `waiting for a worker with labels ${labels.join(', ')}` : 'waiting for a worker (none is alive)';
}

function renderWorkers() {
  const ul = tid('workers-list');
  const state = tid('workers-state');
  const now = Date.now();
  if (workers.list == null) {
    ul.replaceChildren();
    state.hidden = false;
    state.textContent = workers.error || 'Loading workers…';
    tid('workers-count').textContent = '';
    return;
  }
  const frag = document.createDocumentFragment();
  let alive = 0;
  for (const w of workers.list) {
    const beat = parseTime(w.heartbeat_at);
    const isAlive = beat != null && now - beat < WORKER_ALIVE_SECONDS * 1000;
    if (isAlive) alive++;
    const running = w.running || [];
    const runs = h('div', { class: 'w-runs' });
    if (running.length) {
      runs.append(h('span', { class: 'muted', text: 'running ' }));
      running.forEach((id, i) => {
        if (i) runs.append(', ');
        runs.append(h('a', { href: `#/queues/${id}`, text: `#${id}` }));
      });
    } else {
      runs.append(h('span', { class: 'muted', text: 'idle' }));
    }
    const li = h('li', { class: `worker ${isAlive ? 'alive' : 'stale'}`, testid: `worker-${w.id}` },
      h('span', { class: 'w-dot', title: isAlive ? 'alive' : 'no heartbeat recently', 'aria-hidden': 'true' }),
      h('div', { class: 'w-main' },
        h('div', { class: 'w-name' },
          h('strong', { text: w.hostname || String(w.id) }),
          h('span', { class: 'muted', text: ` pid ${w.pid}${w.version ? ` · v${w.version}` : ''}` }),
          h('span', { class: 'visually-hidden', text: isAlive ? ' (alive)' : ' (stale)' })),
        runs,
        (w.labels && w.labels.length)
          ? h('div', { class: 'w-labels muted small mono', testid: `worker-labels-${w.id}`, title: 'labels', text: w.labels.join(' ') })
          : ''),
      h('div', { class: 'w-side' },
        h('span', { class: 'w-slots', title: 'busy / concurrency', text: `${running.length}/${w.concurrency}` }),
        h('span', { class: 'w-beat muted', text: `♥ ${fmtAge(beat, now)}` })));
    li._beat = beat; // its exact time becomes the tooltip when hovered (see init)
    frag.append(li);
  }
  ul.replaceChildren(frag);
  tid('workers-count').textContent = workers.list.length ? `${alive} alive` : '';
  state.hidden = workers.list.length > 0;
  state.textContent = workers.list.length ? '' :
    'No worker has checked in. Start one with `testarena worker` (or run `testarena up`); queues wait until then.';
}

/** Redraws what shows a waiting reason: the board's rows and the open queue. */
function redrawWaiting() {
  // Only waiting rows show a reason; each is rebuilt only if its text changed.
  const now = Date.now();
  for (const [id, row] of board.rows) {
    const q = board.queues.get(id);
    if (!q || q.status !== 'waiting') continue;
    const fresh = rowFor(q, now);
    if (fresh === row) continue;
    row.replaceWith(fresh);
    board.rows.set(id, fresh);
  }
  if (!tid('view-queue').hidden && page.queue) renderQueue(page.queue);
}

async function loadWorkers() {
  try {
    const data = await api('/workers');
    const before = JSON.stringify((workers.list || []).map((w) => w.labels || []));
    workers.list = data.workers || [];
    workers.error = null;
    // Which labels are alive decides why waiting queues wait: redraw them when that changed.
    if (before !== JSON.stringify(workers.list.map((w) => w.labels || []))) redrawWaiting();
  } catch (e) {
    workers.list = null;
    workers.error = isOffline(e) ? 'Cannot reach the server — retrying…'
      : e.status === 404 ? 'This server does not report workers.' : `Workers unavailable: ${e.message}`;
  }
  renderWorkers();
}

// ---------------------------------------------------------------------------------------------
// Console: ANSI colours, line parsing, the live log stream
// ---------------------------------------------------------------------------------------------

const LINE_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) ([|#])(?: ([\s\S]*))?$/;
// eslint-disable-next-line no-control-regex
const CSI_RE = /\x1b\[([0-9;:?]*)([@-~])/g;
const ESCAPED_RE = /(?:\\x[0-9a-fA-F]{2})+/g;

/** Appends `text` to `parent`, marking `\xNN` escapes so they read as bytes. */
function appendPlain(parent, text) {
  let last = 0;
  ESCAPED_RE.lastIndex = 0;
  let m;
  while ((m = ESCAPED_RE.exec(text))) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    parent.append(h('span', { class: 'esc-bytes', title: 'bytes that are not text', text: m[0] }));
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

/** Renders text with ANSI SGR colours (30–37, 90–97, 40–47, 100–107, 1, 2, 3, 4, 22, 39, 49, 0) as spans. */
function renderAnsi(parent, text) {
  // eslint-disable-next-line no-control-regex
  if (!text.includes('\x1b')) {
    appendPlain(parent, text);
    return;
  }
  let fg = null;
  let bg = null;
  let bold = false;
  let dim = false;
  let italic = false;
  let underline = false;
  let last = 0;
  const emit = (chunk) => {
    if (!chunk) return;
    if (fg == null && bg == null && !bold && !dim && !italic && !underline) {
      appendPlain(parent, chunk);
      return;
    }
    const cls = [];
    if (fg != null) cls.push(`fg-${fg}`);
    if (bg != null) cls.push(`bg-${bg}`);
    if (bold) cls.push('b');
    if (dim) cls.push('dim');
    if (italic) cls.push('i');
    if (underline) cls.push('u');
    const span = h('span', { class: `ansi ${cls.join(' ')}` });
    appendPlain(span, chunk);
    parent.append(span);
  };
  CSI_RE.lastIndex = 0;
  let m;
  while ((m = CSI_RE.exec(text))) {
    emit(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[2] !== 'm') continue; // other control sequences are dropped
    const codes = m[1] === '' ? [0] : m[1].split(/[;:]/).map((c) => (c === '' ? 0 : Number(c)));
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { fg = bg = null; bold = dim = italic = underline = false; }
      else if (c === 1) bold = true;
      else if (c === 2) dim = true;
      else if (c === 3) italic = true;
      else if (c === 4) underline = true;
      else if (c === 22) bold = dim = false;
      else if (c === 23) italic = false;
      else if (c === 24) underline = false;
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) fg = c;
      else if (c === 39) fg = null;
      else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) bg = c;
      else if (c === 49) bg = null;
      else if (c === 38 || c === 48) {
        // 256-colour and RGB forms are skipped (their arguments too).
        i += codes[i + 1] === 5 ? 2 : codes[i + 1] === 2 ? 4 : 0;
      }
    }
  }
  // A lone ESC that starts no sequence is shown as a visible symbol.
  emit(text.slice(last).replace(/\x1b/g, '␛'));
}

/** The time of day of a log line (local time), as a span with the milliseconds apart. */
function clockSpan(iso) {
  const span = h('span', { class: 'ts', title: iso });
  const t = parseTime(iso);
  if (t == null) return span;
  const d = new Date(t);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  span.append(`${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`,
    h('span', { class: 'ms', text: `.${p(d.getMilliseconds(), 3)}` }));
  return span;
}

function eventClass(text) {
  if (/^phase: /.test(text)) return 'ev-phase';
  if (/^case \S+ passed\b/.test(text)) return 'ev-pass';
  if (/^case \S+ (failed|error)\b/.test(text)) return 'ev-fail';
  if (/^case \S+ skipped\b/.test(text)) return 'ev-skip';
  if (/^case \S+ flaky\b/.test(text)) return 'ev-flaky';
  if (/^case \S+ try \d+ of \d+ failed\b/.test(text)) return 'ev-try ev-fail';
  if (/^case \S+ try \d+ of \d+/.test(text)) return 'ev-try';
  if (/^case \S+ .*started/.test(text)) return 'ev-case';
  if (/^queue \d+ passed\b/.test(text)) return 'ev-pass ev-final';
  if (/^queue \d+ (failed|error|aborted)\b/.test(text)) return 'ev-fail ev-final';
  if (/^send: /.test(text)) return 'ev-send';
  if (/^expect/.test(text)) return 'ev-expect';
  return '';
}

/** One log line as a DOM node. */
function renderLogLine(line) {
  const m = LINE_RE.exec(line);
  if (!m) {
    const div = h('div', { class: 'ln' });
    const tx = h('span', { class: 'tx' });
    renderAnsi(tx, line);
    div.append(h('span', { class: 'ts' }), tx);
    return div;
  }
  const [, ts, kind, text = ''] = m;
  const isEvent = kind === '#';
  const div = h('div', { class: isEvent ? `ln ev ${eventClass(text)}` : 'ln' });
  div.append(clockSpan(ts));
  if (isEvent) div.append(h('span', { class: 'mark', 'aria-hidden': 'true', text: '#' }));
  const tx = h('span', { class: 'tx' });
  renderAnsi(tx, text);
  div.append(tx);
  return div;
}

/**
 * Follows a queue's log through `GET .../log/stream?offset=N` (SSE). Each `log` event's id is the
 * byte offset after it; a chunk whose end is not past what we have is a repeat and is dropped. On
 * an error we reconnect ourselves from the last offset, so nothing is lost or shown twice. When
 * the stream endpoint is missing, it falls back to polling `GET .../log?offset=N`.
 */
class LiveLog {
  constructor(queueId, el, onState) {
    this.id = queueId;
    this.el = el;
    this.onState = onState;
    this.offset = 0;
    this.es = null;
    this.timer = 0;
    this.failures = 0;
    this.finished = false;
    this.stopped = false;
    this.paused = false;
    this.pending = [];
    this.raf = 0;
    this.lineCount = 0;
    this.stick = true;
    this.mode = 'stream';
  }

  start() {
    this.open();
  }

  /** Closes the stream but keeps the offset (the tab was hidden). */
  pause() {
    if (this.stopped || this.finished) return;
    this.paused = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }

  /** Continues from the offset reached. */
  resume() {
    if (!this.paused || this.stopped || this.finished) return;
    this.paused = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.raf) cancelAnimationFrame(this.raf);
    if (this.es) this.es.close();
    this.es = null;
  }

  open() {
    if (this.stopped || this.paused) return;
    if (this.mode === 'poll') {
      this.poll();
      return;
    }
    this.onState(this.offset ? 'reconnecting' : 'connecting');
    const es = new EventSource(`${API}/queues/${this.id}/log/stream?offset=${this.offset}`);
    this.es = es;
    let opened = false;
    es.addEventListener('open', () => {
      opened = true;
      this.failures = 0;
      this.onState('live');
    });
    es.addEventListener('log', (e) => {
      const end = Number(e.lastEventId);
      if (e.lastEventId !== '' && Number.isFinite(end)) {
        if (end <= this.offset) return;
        this.offset = end;
      }
      this.push(e.data);
    });
    es.addEventListener('end', () => {
      this.finished = true;
      es.close();
      this.flush();
      this.onState('ended');
    });
    es.addEventListener('error', () => {
      es.close();
      if (this.stopped || this.finished || this.paused || this.es !== es) return;
      this.failures++;
      if (!opened && this.failures >= 3) {
        // The stream endpoint does not answer as SSE: read the plain log instead.
        this.mode = 'poll';
      }
      this.onState('reconnecting');
      this.timer = setTimeout(() => this.open(), Math.min(500 * this.failures, 5000));
    });
  }

  async poll() {
    if (this.stopped || this.paused) return;
    try {
      const res = await fetch(`${API}/queues/${this.id}/log?offset=${this.offset}`);
      if (!res.ok) throw new Error(String(res.status));
      const buf = new Uint8Array(await res.arrayBuffer());
      const status = res.headers.get('x-queue-status');
      const lastNl = buf.lastIndexOf(10);
      if (lastNl >= 0) {
        const text = new TextDecoder().decode(buf.subarray(0, lastNl));
        this.offset += lastNl + 1;
        this.push(text);
      }
      this.onState('polling');
      if (status && FINISHED.has(status) && buf.length <= lastNl + 1) {
        this.finished = true;
        this.flush();
        this.onState('ended');
        return;
      }
      this.timer = setTimeout(() => this.poll(), buf.length >= LOG_CHUNK ? 0 : 1000);
    } catch {
      this.onState('reconnecting');
      this.timer = setTimeout(() => this.poll(), 3000);
    }
  }

  push(data) {
    this.pending.push(data);
    if (!this.raf) this.raf = requestAnimationFrame(() => this.flush());
  }

  flush() {
    if (this.raf) cancelAnimationFrame(this.raf);
    this.raf = 0;
    if (!this.pending.length) return;
    const frag = document.createDocumentFragment();
    let n = 0;
    for (const chunk of this.pending) {
      for (const line of chunk.split('\n')) {
        frag.append(renderLogLine(line));
        n++;
      }
    }
    this.pending = [];
    const empty = this.el.querySelector('.console-empty');
    if (empty) empty.remove();
    this.el.append(frag);
    this.lineCount += n;
    if (this.lineCount > MAX_CONSOLE_LINES) this.trim();
    if (this.stick) this.el.scrollTop = this.el.scrollHeight;
    else tid('jump-live').hidden = false;
  }

  trim() {
    let extra = this.lineCount - MAX_CONSOLE_LINES;
    let note = this.el.querySelector('.console-trimmed');
    while (extra > 0) {
      const first = note ? note.nextElementSibling : this.el.firstElementChild;
      if (!first) break;
      first.remove();
      extra--;
      this.lineCount--;
    }
    if (!note) {
      note = h('div', { class: 'console-trimmed' },
        'Older lines are hidden here to keep the page fast; ',
        h('a', { href: `${API}/queues/${this.id}/log`, target: '_blank', rel: 'noopener', text: 'the raw log' }),
        ' has everything.');
      this.el.prepend(note);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Queue page
// ---------------------------------------------------------------------------------------------

function setPageState(kind, message, action) {
  const box = tid('queue-page-state');
  const detail = tid('queue-detail');
  if (!kind) {
    box.hidden = true;
    detail.hidden = false;
    return;
  }
  box.hidden = false;
  box.dataset.state = kind;
  box.replaceChildren();
  if (kind === 'loading') box.append(h('span', { class: 'spinner', 'aria-hidden': 'true' }));
  box.append(h('span', { text: message }));
  if (action) box.append(' ', action);
  detail.hidden = kind !== 'deleted' || !page.queue;
}

function consoleState(state) {
  const e = tid('console-state');
  e.dataset.state = state;
  e.textContent = {
    connecting: 'connecting…',
    live: '● live',
    reconnecting: 'reconnecting…',
    polling: '● following',
    ended: 'complete',
  }[state] || '';
  if (state === 'ended' && page.log && page.log.lineCount === 0) {
    const c = tid('console');
    if (!c.querySelector('.console-empty')) {
      c.append(h('div', { class: 'console-empty', text: 'This queue wrote no log.' }));
    }
  }
}

/** A case's failure message: short ones as they are, long ones folded to their first line. */
function caseMessage(t, c) {
  if (!c.message) return null;
  const first = c.message.split('\n', 1)[0];
  if (!c.message.includes('\n') && c.message.length <= 160) {
    return h('div', { class: 'case-msg', testid: 'case-message', text: c.message });
  }
  const key = `${t.id}/${c.id}`;
  const d = h('details', { class: 'case-msg', testid: 'case-message', open: page.openMessages.has(key) },
    h('summary', { text: first.length > 160 ? `${first.slice(0, 160)}…` : first }),
    h('pre', { text: c.message }));
  d.addEventListener('toggle', () => {
    if (d.open) page.openMessages.add(key);
    else page.openMessages.delete(key);
  });
  return d;
}

/** A word as the shell reads it: as it is when plain, else in single quotes. */
function shellWord(w) {
  return /^[A-Za-z0-9_.,:/@%+=-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/** The command that replays case `c` of task `t` of queue `q` locally from its repro bundle. */
function reproCommand(q, t, c) {
  return `testarena repro ${q.id} ${shellWord(c.id)} --task ${t.id} --server ${shellWord(location.origin)}`;
}

/** The "Repro" panel of a failed case: the command to copy and the bundle to download. */
function reproPanel(q, t, c) {
  const cmd = reproCommand(q, t, c);
  const said = h('span', { class: 'muted small', testid: 'case-repro-copied', 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', class: 'linklike', testid: 'case-repro-copy', text: 'Copy',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(cmd);
        said.textContent = 'copied';
      } catch {
        // No clipboard (a page not served over HTTPS): the command is selected to copy by hand.
        const r = document.createRange();
        r.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(r);
        said.textContent = 'selected: press Ctrl+C';
      }
    } });
  const code = h('code', { class: 'mono', testid: 'case-repro-command', text: cmd });
  const bundle = `/api/v1/queues/${q.id}/cases/${encodeURIComponent(c.id)}/repro?task=${t.id}`;
  return h('div', { class: 'case-repro', testid: 'case-repro' },
    h('span', { class: 'muted small', text: 'Replay this case locally, without building: ' }),
    code, ' ', copy, ' ', said, ' ',
    h('a', { href: bundle, testid: 'case-repro-bundle', text: 'bundle (tar.gz)' }));
}

function renderTasks(q) {
  const box = tid('tasks');
  const frag = document.createDocumentFragment();
  if (!q.tasks || q.tasks.length === 0) {
    frag.append(h('p', { class: 'muted small', testid: 'tasks-empty',
      text: q.status === 'waiting'
        ? (waitingReason(q) ? `${waitingReason(q)[0].toUpperCase()}${waitingReason(q).slice(1)}.`
          : q.scenarios ? 'Waiting for a worker.' : 'Waiting for a worker; the repository’s default scenarios are listed once it is fetched.')
        : 'No scenarios ran.' }));
  }
  for (const t of q.tasks || []) {
    const start = parseTime(t.started_at);
    const end = parseTime(t.finished_at);
    const head = h('div', { class: 'task-head' },
      badge(t.status, `task-status-${t.id}`),
      h('span', { class: 'mono task-name', text: t.scenario }),
      h('span', { class: 'muted small', text: start != null ? fmtDuration((end ?? Date.now()) - start) : '' }));
    const sec = h('div', { class: 'task', testid: `task-${t.id}`, 'data-scenario': t.scenario }, head);
    if (t.error) sec.append(h('pre', { class: 'task-error', text: t.error }));
    if (t.cases && t.cases.length) {
      const ul = h('ul', { class: 'cases' });
      for (const c of t.cases) {
        const links = h('span', { class: 'case-links' });
        if (c.html_url) links.append(h('a', { href: c.html_url, target: '_blank', rel: 'noopener', testid: 'case-html-link', text: 'HTML' }));
        if (c.log_url) links.append(h('a', { href: c.log_url, target: '_blank', rel: 'noopener', testid: 'case-log-link', text: 'log' }));
        const key = `${t.id}/${c.id}`;
        const failed = (c.status === 'failed' || c.status === 'error') && q.status !== 'running' && q.status !== 'waiting';
        if (failed) {
          links.append(h('button', { type: 'button', class: 'linklike', testid: 'case-repro-link', text: 'Repro',
            'aria-expanded': page.openRepro.has(key) ? 'true' : 'false',
            onclick: () => {
              if (page.openRepro.has(key)) page.openRepro.delete(key);
              else page.openRepro.add(key);
              renderTasks(page.queue);
            } }));
        }
        const li = h('li', { class: `case s-${c.status}`, testid: 'case-row', 'data-case': c.id, 'data-status': c.status },
          h('span', { class: `cicon s-${c.status}`, title: c.status, text: STATUS_ICON[c.status] || '?' }),
          h('div', { class: 'case-main' },
            h('div', { class: 'case-name' },
              h('span', { text: c.name }),
              c.name !== c.id ? h('span', { class: 'muted mono small', text: ` ${c.id}` }) : null),
            caseHistory(t, c),
            caseMessage(t, c),
            failed && page.openRepro.has(key) ? reproPanel(q, t, c) : null),
          h('span', { class: 'case-status visually-hidden', text: c.status }),
          h('span', { class: 'case-dur muted small', text: fmtCaseDuration(c.duration_ms) }),
          links);
        ul.append(li);
      }
      sec.append(ul);
    }
    // A big task lists only its first cases; the rest are paged through the API.
    if (t.cases_next) {
      const shown = (t.cases || []).length;
      sec.append(h('p', { class: 'muted small', testid: 'cases-truncated' },
        h('span', { text: `Showing ${shown} of ${t.cases_total} cases. ` }),
        h('a', { href: t.cases_next, target: '_blank', rel: 'noopener', text: 'Next cases (JSON)' })));
    }
    frag.append(sec);
  }
  box.replaceChildren(frag);
}

function renderQueue(q) {
  page.queue = q;
  const id = q.id;
  setBadge(tid('queue-status'), q.status);
  tid('queue-status').title = verdictText(q);
  const flakyEl = tid('queue-flaky');
  const flaky = (q.summary && q.summary.flaky) || 0;
  flakyEl.hidden = !(flaky && FINISHED.has(q.status));
  flakyEl.textContent = `${flaky} flaky`;
  tid('queue-id').textContent = `#${id}`;
  tid('queue-name').textContent = q.name;
  // A bisect's step queue is named `bisect #N: <commit>`: link back to its bisect.
  const bisect = /^bisect #(\d+): /.exec(q.name);
  const back = tid('queue-bisect-link');
  back.hidden = !bisect;
  if (bisect) {
    back.href = `#/bisects/${bisect[1]}`;
    back.textContent = `step of bisect #${bisect[1]}`;
  }
  const phase = tid('queue-phase');
  if (q.status === 'running' && q.phase) {
    phase.hidden = false;
    phase.textContent = q.abort_requested ? `${q.phase} · aborting…` : q.phase;
  } else if (q.abort_requested && !FINISHED.has(q.status)) {
    phase.hidden = false;
    phase.textContent = 'aborting…';
  } else if (waitingReason(q)) {
    phase.hidden = false;
    phase.textContent = waitingReason(q);
  } else {
    phase.hidden = true;
  }
  tid('queue-repo').textContent = q.repo;
  tid('queue-branch').textContent = q.branch;
  const commit = tid('queue-commit');
  commit.textContent = q.commit ? shortSha(q.commit) : 'not fetched yet';
  commit.title = q.commit || '';
  tid('queue-priority').textContent = `${q.priority} of 9`;
  const created = parseTime(q.created_at);
  const cr = tid('queue-created');
  cr.textContent = fmtAge(created);
  cr.title = fmtDateTime(created);
  tickQueue();
  tid('queue-worker').textContent = q.worker ? `${q.worker}${q.attempts > 1 ? ` (attempt ${q.attempts})` : ''}` : '—';
  tid('queue-scenarios').textContent = q.scenarios ? q.scenarios.join(', ') : 'repository default';
  tid('queue-labels').textContent = (q.labels && q.labels.length) ? q.labels.join(', ') : 'any worker';
  tid('queue-submitter').textContent = q.submitted_by || 'anonymous';
  showBuild(tid('queue-build'), q);
  const err = tid('queue-error');
  err.hidden = !q.error;
  err.textContent = q.error || '';

  const finished = FINISHED.has(q.status);
  const sum = q.summary || EMPTY_SUMMARY;
  tid('abort-button').hidden = finished;
  tid('abort-button').disabled = page.busy || q.abort_requested || !!deniedReason('abort', q);
  tid('abort-button').textContent = q.abort_requested ? 'Aborting…' : 'Abort';
  tid('rerun-button').hidden = !finished;
  const hasFailures = sum.failed + sum.error > 0
    || (q.tasks || []).some((t) => t.status === 'failed' || t.status === 'error');
  tid('rerun-failed-button').hidden = !finished || !hasFailures;
  tid('delete-button').hidden = false;
  for (const b of ['abort', 'rerun', 'rerun-failed', 'delete']) {
    const reason = deniedReason(b, q);
    const el = tid(`${b}-button`);
    if (b !== 'abort') el.disabled = page.busy || !!reason;
    el.title = reason;
  }

  tid('raw-log-link').href = `${API}/queues/${id}/log`;
  tid('junit-link').href = `${API}/queues/${id}/junit.xml`;
  tid('archive-link').href = `${API}/queues/${id}/archive`;
  tid('archive-link').setAttribute('download', `testarena-queue-${id}.tar.gz`);
  for (const a of ['junit-link', 'archive-link']) tid(a).classList.toggle('pending', !finished);

  const sumEl = tid('queue-summary');
  sumEl.replaceChildren();
  if (sum.total) {
    sumEl.append(h('span', { text: `${casesDone(sum)}/${sum.total} done` }));
    if (sum.passed) sumEl.append(h('span', { class: 'n-pass', text: ` · ${sum.passed} passed` }));
    if (sum.flaky) sumEl.append(h('span', { class: 'n-flaky', text: ` · ${sum.flaky} flaky` }));
    if (sum.failed) sumEl.append(h('span', { class: 'n-fail', text: ` · ${sum.failed} failed` }));
    if (sum.error) sumEl.append(h('span', { class: 'n-err', text: ` · ${sum.error} error` }));
    if (sum.skipped) sumEl.append(h('span', { class: 'n-skip', text: ` · ${sum.skipped} skipped` }));
  }
  renderTasks(q);
  ensureHistory(q);
  tid('compare-button').hidden = q.status === 'waiting';
  document.title = `#${id} ${q.name} · ${verdictText(q)} — TestArena`;
}

function tickQueue() {
  const q = page.queue;
  if (!q) return;
  const d = queueDuration(q);
  tid('queue-duration').textContent = d == null ? (q.status === 'waiting' ? 'not started' : '—')
    : fmtDuration(d) + (q.status === 'running' ? ' so far' : '');
}

async function openQueue(id) {
  if (page.log) page.log.stop();
  page.log = null;
  page.id = id;
  page.queue = null;
  page.busy = false;
  page.openMessages.clear();
  page.openRepro.clear();
  page.history = null;
  closeCompare();
  const c = tid('console');
  c.replaceChildren(h('div', { class: 'console-empty', text: 'Waiting for output…' }));
  tid('jump-live').hidden = true;
  tid('queue-detail').hidden = true;
  const known = board.queues.get(id);
  if (known) {
    setPageState(null);
    renderQueue(known);
  } else {
    setPageState('loading', `Loading queue #${id}…`);
  }
  document.title = `#${id} — TestArena`;
  await fetchQueue(id);
  if (page.id !== id || !page.queue) return;
  page.log = new LiveLog(id, c, consoleState);
  page.log.start();
}

async function fetchQueue(id) {
  try {
    const q = await api(`/queues/${id}`);
    if (page.id !== id) return;
    setPageState(null);
    renderQueue(q);
  } catch (e) {
    if (page.id !== id) return;
    if (e instanceof HttpError && e.status === 404) {
      setPageState('missing', `Queue #${id} does not exist; it may have been deleted.`,
        h('a', { href: '#/', text: 'Back to all queues' }));
      return;
    }
    if (page.queue) return; // keep showing what we have; polling or events will refresh it
    setPageState('error', isOffline(e) ? 'Cannot reach the server — retrying…' : `${e.message} — retrying…`);
    await new Promise((r) => setTimeout(r, 3000));
    if (page.id === id) await fetchQueue(id);
  }
}

async function queueAction(action) {
  const q = page.queue;
  if (!q || page.busy) return;
  const id = q.id;
  const confirmSpec = {
    abort: { title: `Abort queue #${id}?`, body: 'The running build or test stops and the queue ends as aborted. Results so far are kept.', ok: 'Abort queue' },
    delete: { title: `Delete queue #${id}?`, body: `This removes “${q.name}”, its logs and its reports for good.`, ok: 'Delete queue' },
  }[action];
  if (confirmSpec && !(await confirmDialog(confirmSpec))) return;
  page.busy = true;
  renderQueue(page.queue);
  try {
    if (action === 'abort') {
      const updated = await api(`/queues/${id}/abort`, { method: 'POST' });
      if (updated) {
        upsertQueue(updated);
        if (page.id === id) renderQueue(updated);
      }
      toast(`Abort requested for queue #${id}.`);
    } else if (action === 'delete') {
      await api(`/queues/${id}`, { method: 'DELETE' });
      removeQueue(id);
      toast(`Queue #${id} deleted.`, 'ok');
      if (page.id === id) location.hash = '#/';
    } else {
      const onlyFailed = action === 'rerun-failed';
      const created = await api(`/queues/${id}/rerun`, { method: 'POST', body: { only_failed: onlyFailed } });
      upsertQueue(created);
      toast(`Queue #${created.id} created${onlyFailed ? ' from the failed cases' : ''}.`, 'ok');
      location.hash = `#/queues/${created.id}`;
    }
  } catch (e) {
    toast(isOffline(e) ? 'Cannot reach the server — try again in a moment.' : e.message, 'error');
  } finally {
    page.busy = false;
    if (page.queue && page.id === id) renderQueue(page.queue);
  }
}

// ---------------------------------------------------------------------------------------------
// History: each case's last results as a strip, the flaky badge, "compare with previous", and
// the board's "got worse" filter (GET /api/v1/queues/{id}/history, .../compare/previous)
// ---------------------------------------------------------------------------------------------

const STRIP_SIZE = 30; // results per case
const STRIP_PAGE = 500; // cases per request: one request per 500 cases, not one per case
const STRIP_PAGES = 4; // the page lists at most 2000 cases

/** Whether a queue has a case that got worse than in the previous run of its branch. */
function gotWorse(q) {
  return (q.regressions || 0) > 0;
}

function worseBadge(q) {
  const n = q.regressions;
  return h('span', { class: 'worse-badge', testid: `worse-${q.id}`,
    title: `${n} case${n === 1 ? '' : 's'} passed in queue #${q.previous_id} (the run before it) and fail${n === 1 ? 's' : ''} here`,
    text: `▼ ${n} worse` });
}

/**
 * Loads the strips of the queue's cases, a page of cases at a time, and draws them. A queue
 * still running gets them again when it has new cases (at most every 5 s) and once finished,
 * when its own results are in.
 */
function ensureHistory(q) {
  const hist = page.history;
  const finished = FINISHED.has(q.status);
  const cases = (q.tasks || []).reduce((n, t) => n + (t.cases || []).length, 0);
  if (hist && hist.id === q.id) {
    if (hist.finished || hist.loading) return;
    const grew = cases > hist.cases && Date.now() - hist.at > 5000;
    if (!finished && !grew) return;
  }
  loadHistory(q.id, finished, cases);
}

async function loadHistory(id, finished, cases) {
  const hist = { id, finished, cases, at: Date.now(), loading: true, strips: page.history?.strips || new Map() };
  page.history = hist;
  const strips = new Map();
  try {
    let after = null;
    for (let n = 0; n < STRIP_PAGES; n++) {
      const qs = new URLSearchParams({ limit: String(STRIP_SIZE), cases: String(STRIP_PAGE) });
      if (after != null) qs.set('after', String(after));
      const data = await api(`/queues/${id}/history?${qs}`);
      if (page.history !== hist) return;
      for (const s of data.cases) strips.set(`${s.task}/${s.case}`, s);
      after = data.next ?? null;
      if (after == null) break;
    }
    hist.strips = strips;
  } catch {
    // The strips are extra: the page works without them, and the next change tries again.
    hist.finished = false;
    hist.at = Date.now();
  }
  hist.loading = false;
  if (page.history === hist && page.queue && page.queue.id === id) renderTasks(page.queue);
}

/** A case's strip (oldest result left, newest right; each a link to its queue) and its flaky badge. */
function caseHistory(t, c) {
  const hist = page.history;
  const s = hist && hist.id === page.id ? hist.strips.get(`${t.id}/${c.id}`) : null;
  if (!s || !s.results.length) return null;
  const strip = h('span', { class: 'hstrip', testid: 'history-strip', role: 'list',
    'aria-label': `last ${s.results.length} results of ${c.id}`, 'data-count': s.results.length });
  for (const r of [...s.results].reverse()) {
    strip.append(h('a', {
      class: `hbox s-${r.status}${r.queue === page.id ? ' current' : ''}`, role: 'listitem',
      href: `#/queues/${r.queue}`, testid: 'history-box', 'data-status': r.status, 'data-queue': r.queue,
      title: `${shortSha(r.commit)} · ${r.status} · queue #${r.queue}`,
      'aria-label': `queue #${r.queue}: ${r.status} at ${shortSha(r.commit)}`,
    }));
  }
  const rate = s.pass_rate == null ? '' : `${Math.round(s.pass_rate * 100)}% passed`;
  return h('div', { class: 'case-history' }, strip,
    rate ? h('span', { class: 'muted small', testid: 'history-rate', text: rate }) : null,
    s.flaky ? h('span', { class: 'flaky-badge', testid: 'flaky-badge', text: 'flaky',
      title: 'Passed and failed on one commit (or passed only when run again) among these results' }) : null);
}

function closeCompare() {
  page.compare = null;
  const panel = tid('compare-panel');
  if (panel) {
    panel.hidden = true;
    tid('compare-body').replaceChildren();
  }
  const btn = tid('compare-button');
  if (btn) btn.setAttribute('aria-expanded', 'false');
}

/** "Compare with previous": the queue's cases against the previous run of its branch. */
async function toggleCompare() {
  const id = page.id;
  if (page.compare && page.compare.id === id) {
    closeCompare();
    return;
  }
  const view = { id };
  page.compare = view;
  const panel = tid('compare-panel');
  const body = tid('compare-body');
  panel.hidden = false;
  tid('compare-button').setAttribute('aria-expanded', 'true');
  body.replaceChildren(h('p', { class: 'muted small', text: 'Comparing…' }));
  try {
    const c = await api(`/queues/${id}/compare/previous`);
    if (page.compare !== view) return;
    body.replaceChildren(renderComparison(c));
  } catch (e) {
    if (page.compare !== view) return;
    body.replaceChildren(h('p', { class: 'muted small', testid: 'compare-none',
      text: e instanceof HttpError && e.status === 404
        ? 'No earlier finished run of this repository and branch to compare with.'
        : isOffline(e) ? 'Cannot reach the server — try again in a moment.' : e.message }));
  }
}

const COMPARE_LISTS = [
  ['newly_failing', 'Newly failing', 'passed before, fails now'],
  ['newly_passing', 'Newly passing', 'failed before, passes now'],
  ['still_failing', 'Still failing', 'failed both times'],
  ['new', 'New', 'not in the previous run'],
  ['removed', 'Removed', 'only in the previous run'],
];

function renderComparison(c) {
  const frag = document.createDocumentFragment();
  const base = c.base;
  frag.append(h('p', { class: 'small', testid: 'compare-base' }, 'Against ',
    h('a', { href: `#/queues/${base.id}`, text: `queue #${base.id}` }),
    ` (${base.branch}${base.commit ? ` ${shortSha(base.commit)}` : ''}, ${base.status}).`));
  let any = false;
  for (const [key, title, hint] of COMPARE_LISTS) {
    const list = c[key] || [];
    const total = c.counts[key];
    if (!total) continue;
    any = true;
    const ul = h('ul', { class: 'compare-list' });
    for (const e of list) {
      const msg = (e.head_message || e.base_message || '').split('\n', 1)[0];
      ul.append(h('li', { testid: 'compare-case', 'data-case': e.case, 'data-scenario': e.scenario },
        h('span', { class: 'mono', text: e.case }),
        h('span', { class: 'muted small mono', text: ` ${e.scenario}` }),
        h('span', { class: 'small' }, ' ',
          h('span', { class: `s-${e.base_status || 'none'} st`, text: e.base_status || '—' }), ' → ',
          h('span', { class: `s-${e.head_status || 'none'} st`, text: e.head_status || '—' })),
        msg ? h('div', { class: 'case-msg', text: msg.length > 160 ? `${msg.slice(0, 160)}…` : msg }) : null));
    }
    const more = total > list.length ? h('p', { class: 'muted small', text: `… and ${total - list.length} more` }) : null;
    frag.append(h('section', { class: 'compare-group', testid: `compare-${key.replace('_', '-')}`, 'data-count': total },
      h('h3', { title: hint, text: `${title} (${total})` }), ul, more));
  }
  if (!any) frag.append(h('p', { class: 'muted small', testid: 'compare-same', text: 'No case changed its verdict.' }));
  frag.append(h('p', { class: 'muted small', text: `${c.counts.unchanged} unchanged.` }));
  return frag;
}

// ---------------------------------------------------------------------------------------------
// Live events
// ---------------------------------------------------------------------------------------------

let pollTimer = 0;

// Live events are applied in batches, the newest state of each queue only, in an animation
// frame at most every APPLY_EVERY ms: a busy farm sends changes all the time, and the browser
// dispatches a burst of events in one task, so handling each at once made one long task of them
// all, with a style and layout pass per row; one frame per change (25 a second) still cost
// ~4 ms of style, layout and paint each. Issue 14 lets the board lag by up to 100 ms.
const APPLY_EVERY = 100;
const incoming = { queues: new Map(), scheduled: false, last: -Infinity }; // id -> Queue, or null when deleted

function receive(id, q) {
  incoming.queues.set(id, q);
  scheduleIncoming();
}

function scheduleIncoming() {
  if (incoming.scheduled) return;
  incoming.scheduled = true;
  const wait = Math.max(0, incoming.last + APPLY_EVERY - performance.now());
  setTimeout(() => {
    // A hidden tab runs no animation frames.
    if (document.hidden) applyIncoming();
    else requestAnimationFrame(applyIncoming);
  }, wait);
}

function applyIncoming() {
  incoming.scheduled = false;
  incoming.last = performance.now();
  // At most ~8 ms of work at a time (a reconnect can bring hundreds of changes at once); the rest
  // waits for the next batch, where a newer state of the same queue replaces its older one.
  const until = incoming.last + 8;
  board.batching = true;
  try {
    for (const [id, q] of incoming.queues) {
      incoming.queues.delete(id);
      if (q) applyQueueEvent(q);
      else applyDeletedEvent(id);
      if (performance.now() > until) break;
    }
  } finally {
    board.batching = false;
  }
  if (board.loaded) setBoardState();
  if (incoming.queues.size) scheduleIncoming();
}

function onQueueEvent(q) {
  receive(q.id, q);
}

function onDeletedEvent(id) {
  receive(id, null);
}

function applyQueueEvent(q) {
  upsertQueue(q);
  if (page.id === q.id && !tid('view-queue').hidden) renderQueue(q);
}

function applyDeletedEvent(id) {
  removeQueue(id);
  if (page.id === id && !tid('view-queue').hidden) {
    if (page.log) page.log.stop();
    setPageState('deleted', `Queue #${id} was deleted.`, h('a', { href: '#/', text: 'Back to all queues' }));
    tid('queue-detail').hidden = true;
    page.queue = null;
  }
}

// One event stream per visible tab: browsers allow six HTTP/1.1 connections per server, so a
// hidden tab closes its streams and reads the current state again when it is shown.
const live = { es: null, opened: false, failures: 0, paused: false, timer: 0 };

function openEvents() {
  if (live.paused) return;
  const es = new EventSource(`${API}/events`);
  live.es = es;
  es.addEventListener('open', () => {
    const wasDown = live.opened;
    live.opened = true;
    live.failures = 0;
    conn.set('live');
    stopPolling();
    if (wasDown) resync();
  });
  es.addEventListener('queue', (e) => {
    try { onQueueEvent(JSON.parse(e.data)); } catch { /* malformed event */ }
  });
  es.addEventListener('deleted', (e) => {
    try { onDeletedEvent(Number(JSON.parse(e.data).id)); } catch { /* malformed event */ }
  });
  // The server dropped events for this (slow) client: read the current state again.
  es.addEventListener('resync', () => resync());
  es.addEventListener('error', () => {
    if (live.es !== es) return;
    if (es.readyState === EventSource.CONNECTING) {
      conn.set('reconnecting');
      startPolling();
      return; // the browser reconnects by itself
    }
    es.close();
    live.failures++;
    conn.set(live.opened ? 'reconnecting' : 'polling');
    startPolling();
    live.timer = setTimeout(openEvents, Math.min(2000 * live.failures, 15000));
  });
}

function pauseLive() {
  live.paused = true;
  clearTimeout(live.timer);
  if (live.es) live.es.close();
  live.es = null;
  stopPolling();
  conn.set('paused');
  if (page.log) page.log.pause();
}

function resumeLive() {
  if (!live.paused) return;
  live.paused = false;
  live.opened = true; // the next "open" reads the current state again
  conn.set('connecting');
  openEvents();
  if (page.log) page.log.resume();
}

/** Without live events, refresh what is on screen every few seconds. */
function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(() => {
    if (!tid('view-board').hidden) refreshBoard();
    if (!tid('view-queue').hidden && page.id != null && page.queue) fetchQueue(page.id);
  }, 4000);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = 0;
}

/** After a reconnect: events may have been missed, so read the current state again. */
function resync() {
  refreshBoard();
  if (page.id != null && !tid('view-queue').hidden && page.queue) fetchQueue(page.id);
  loadWorkers();
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

let firstRoute = true;

function route() {
  const hash = location.hash || '#/';
  if (routeOtherPage(hash)) {
    firstRoute = false;
    return;
  }
  const m = /^#\/queues\/(\d+)\/?$/.exec(hash);
  const boardView = tid('view-board');
  const queueView = tid('view-queue');
  if (m) {
    boardView.hidden = true;
    queueView.hidden = false;
    const id = Number(m[1]);
    if (id !== page.id || !page.queue) openQueue(id);
    if (!firstRoute) $('#queue-title').focus({ preventScroll: true });
    window.scrollTo(0, 0);
  } else {
    if (page.log) page.log.stop();
    page.log = null;
    page.id = null;
    page.queue = null;
    queueView.hidden = true;
    boardView.hidden = false;
    document.title = 'Queues — TestArena';
    if (!board.started) {
      board.started = true;
      loadBoard();
    }
    if (hash === '#submit') {
      tid('field-repo').focus();
    } else if (!firstRoute) {
      $('#board-title').focus({ preventScroll: true });
    }
  }
  firstRoute = false;
}

// ---------------------------------------------------------------------------------------------
// Pages in files of their own (web/bisect.js)
// ---------------------------------------------------------------------------------------------

// Such a file runs first and registers `{ match(hash) → args or null, open(args, first), close() }`
// in `window.__testarenaPages`; it builds its page with what this file shares here.
const otherPages = window.__testarenaPages || [];
window.__testarenaKit = {
  API, FINISHED, h, api, tid, toast, confirmDialog, deniedReason, isOffline, HttpError,
  parseTime, fmtAge, fmtDateTime, fmtDuration, shortSha, shortRepo,
};

/** Shows the page of another file that claims `hash` (closing the others); false if none does. */
function routeOtherPage(hash) {
  let shown = false;
  for (const p of otherPages) {
    const args = shown ? null : p.match(hash);
    if (!args) {
      p.close();
      continue;
    }
    shown = true;
    if (page.log) page.log.stop();
    page.log = null;
    page.id = null;
    page.queue = null;
    tid('view-board').hidden = true;
    tid('view-queue').hidden = true;
    p.open(args, firstRoute);
  }
  return shown;
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

function init() {
  const form = tid('submit-form');
  form.addEventListener('submit', onSubmit);
  for (const f of FORM_FIELDS) {
    form.elements[f].addEventListener('input', () => {
      const err = tid(`field-error-${f}`, form);
      if (!err.hidden) {
        err.hidden = true;
        form.elements[f].removeAttribute('aria-invalid');
      }
    });
  }
  try {
    form.elements.repo.value = localStorage.getItem('testarena.repo') || '';
    form.elements.branch.value = localStorage.getItem('testarena.branch') || 'main';
  } catch {
    form.elements.branch.value = 'main';
  }

  tid('status-filter').addEventListener('click', (e) => {
    const chip = e.target.closest('.chip');
    if (chip) setStatusFilter(chip.dataset.status);
  });
  tid('filter-worse').addEventListener('change', (e) => setWorseFilter(e.target.checked));
  tid('compare-button').addEventListener('click', toggleCompare);
  const search = tid('search');
  search.addEventListener('input', debounce(() => {
    board.text = search.value.trim().toLowerCase();
    if (board.loaded) renderBoard();
  }, 120));
  tid('load-more').addEventListener('click', loadMore);

  // Exact creation times as tooltips, made only when hovered (1,000 rows stay cheap).
  tid('queue-list').addEventListener('mouseover', (e) => {
    const age = e.target.closest('.age');
    const row = age && age.closest('.qrow');
    if (row && !age.title) age.title = `created ${fmtDateTime(row._created)}`;
  });
  tid('workers-list').addEventListener('mouseover', (e) => {
    const beat = e.target.closest('.w-beat');
    const li = beat && beat.closest('.worker');
    if (li && !beat.title) beat.title = `last heartbeat ${fmtDateTime(li._beat)}`;
  });
  // A click anywhere on a row opens it (the name is the keyboard-reachable link).
  tid('queue-list').addEventListener('click', (e) => {
    if (e.target.closest('a, button')) return;
    if (window.getSelection && String(window.getSelection()).length) return;
    const row = e.target.closest('.qrow');
    if (row) location.hash = `#/queues/${row.dataset.id}`;
  });

  for (const b of document.querySelectorAll('[data-action]')) {
    b.addEventListener('click', () => queueAction(b.dataset.action));
  }

  const c = tid('console');
  c.addEventListener('scroll', () => {
    const atEnd = c.scrollHeight - c.scrollTop - c.clientHeight < 30;
    if (page.log) page.log.stick = atEnd;
    if (atEnd) tid('jump-live').hidden = true;
  }, { passive: true });
  tid('jump-live').addEventListener('click', () => {
    if (page.log) page.log.stick = true;
    c.scrollTop = c.scrollHeight;
    tid('jump-live').hidden = true;
    c.focus({ preventScroll: true });
  });
  tid('wrap-toggle').addEventListener('change', (e) => c.classList.toggle('nowrap', !e.target.checked));

  tid('sign-in-button').addEventListener('click', openSignIn);
  tid('sign-out-button').addEventListener('click', onSignOut);
  tid('sign-in-form').addEventListener('submit', onSignIn);
  tid('sign-in-cancel').addEventListener('click', () => tid('sign-in-dialog').close());
  loadSession();

  window.addEventListener('hashchange', route);
  // The board loads at once, whichever view is shown: index.html preloads its first page (so
  // that request is not made for nothing), and the way back to the board is then instant.
  board.started = true;
  loadBoard();
  route();
  openEvents();
  loadWorkers();
  workers.timer = setInterval(() => { if (!document.hidden) loadWorkers(); }, 5000);
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) pauseLive();
    else resumeLive();
  });
  let ticks = 0;
  setInterval(() => {
    ticks++;
    if (!tid('view-board').hidden) tickBoard(ticks % 15 === 0);
    if (!tid('view-queue').hidden && page.queue && page.queue.status === 'running') tickQueue();
    if (workers.list && ticks % 5 === 0) renderWorkers();
  }, 1000);

  api('/health').then((hl) => {
    if (hl && hl.version) tid('version').textContent = `TestArena ${hl.version}`;
  }).catch(() => {});
}

// Test hook: lets the browser tests measure rendering without a server full of queues.
window.__testarena = { board, renderBoard: () => renderBoard(true), buildRow };

init();
