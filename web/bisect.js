// TestArena dashboard: the bisect pages (issue 16). `#/bisects` lists the bisects, newest first;
// `#/bisects/N` shows one: its range, its steps (each linked to its step queues) and its result,
// read again every two seconds while it runs. This file runs before app.js and registers its
// route there (window.__testarenaPages); it builds the page with what app.js shares
// (window.__testarenaKit). As in app.js, every piece of data reaches the DOM as text or as an
// attribute set one by one, never as HTML.

const POLL_MS = 2000;
const VERDICT_ICON = { good: '✓', bad: '✗', skip: '–' };
const STATUS_ICON = { running: '●', found: '✓', undecided: '?', aborted: '■', error: '!' };
// Bisect statuses and verdicts drawn in the colours of the queue statuses they resemble.
const COLOUR = {
  running: 'running', found: 'passed', undecided: 'waiting', aborted: 'aborted', error: 'error',
  good: 'passed', bad: 'failed', skip: 'skipped',
};

const state = {
  view: null, // 'list' or 'detail' while shown
  id: null, // the bisect shown
  bisect: null,
  timer: 0,
  gen: 0, // bumps on every open, so answers for an earlier page are dropped
  busy: false,
};

const kit = () => window.__testarenaKit;

/** A status or verdict badge. */
function badge(status, testid) {
  const { h } = kit();
  return h('span', { class: `badge s-${COLOUR[status] || 'waiting'}`, testid, 'data-status': status },
    h('span', { class: 'icon', 'aria-hidden': 'true', text: STATUS_ICON[status] || VERDICT_ICON[status] || '?' }),
    h('span', { class: 'label', text: status }));
}

function sha(s) {
  return s ? s.slice(0, 8) : '';
}

/** A revision as given, a full SHA shortened. */
function rev(given) {
  return /^[0-9a-f]{40}$/i.test(given) ? sha(given) : given;
}

/** `v1.0 (1a2b3c4d)` once resolved, as given before. */
function end(given, resolved) {
  return resolved && resolved.toLowerCase() !== given.toLowerCase() ? `${given} (${sha(resolved)})` : rev(given);
}

/** A link to step queue `id`. */
function queueLink(id, text) {
  return kit().h('a', { href: `#/queues/${id}`, text: text || `#${id}`, testid: 'bisect-queue-link' });
}

function stop() {
  clearTimeout(state.timer);
  state.timer = 0;
  state.gen++;
}

function show(part) {
  const { tid } = kit();
  state.view = part;
  tid('view-bisect').hidden = false;
  tid('bisect-list-card').hidden = part !== 'list';
  tid('bisect-detail').hidden = part !== 'detail';
}

function pageState(kind, message, action) {
  const { tid, h } = kit();
  const box = tid('bisect-page-state');
  box.hidden = !kind;
  if (!kind) return;
  box.dataset.state = kind;
  box.replaceChildren();
  if (kind === 'loading') box.append(h('span', { class: 'spinner', 'aria-hidden': 'true' }));
  box.append(h('span', { text: message }));
  if (action) box.append(' ', action);
}

/** Reads again after POLL_MS, while the page is the one that asked (`gen`). */
function later(gen, fn) {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    if (gen === state.gen && !document.hidden) fn();
    else if (gen === state.gen) later(gen, fn);
  }, POLL_MS);
}

// ---------------------------------------------------------------------------------------------
// The list
// ---------------------------------------------------------------------------------------------

async function loadList(gen) {
  const { api, tid, h, parseTime, fmtAge, fmtDateTime, isOffline } = kit();
  try {
    const list = await api('/bisects?limit=100');
    if (gen !== state.gen) return;
    pageState(null);
    const body = tid('bisect-list');
    body.replaceChildren(...list.bisects.map((b) => {
      const created = parseTime(b.created_at);
      const result = b.result
        ? h('span', { class: 'mono', title: b.result.subject, text: `${sha(b.result.commit)} ${b.result.subject}` })
        : h('span', { class: 'muted', text: b.message || '—' });
      return h('tr', { testid: 'bisect-row', 'data-id': b.id },
        h('td', null, badge(b.status)),
        h('td', null, h('a', { href: `#/bisects/${b.id}`, text: `#${b.id}` }), ' ',
          h('span', { class: 'muted small', title: fmtDateTime(created), text: fmtAge(created) })),
        h('td', { class: 'mono' }, `${rev(b.good)} .. ${rev(b.bad)}`),
        h('td', { text: `${b.steps.length}${b.range_size != null ? ` (of ${b.range_size})` : ''}` }),
        h('td', null, result));
    }));
    tid('bisect-count').textContent = list.bisects.length ? `${list.bisects.length} shown` : '';
    if (!list.bisects.length) pageState('empty', 'No bisect yet.');
    if (list.bisects.some((b) => b.status === 'running')) later(gen, () => loadList(gen));
  } catch (e) {
    if (gen !== state.gen) return;
    pageState('error', isOffline(e) ? 'Cannot reach the server — retrying…' : `${e.message} — retrying…`);
    later(gen, () => loadList(gen));
  }
}

// ---------------------------------------------------------------------------------------------
// One bisect
// ---------------------------------------------------------------------------------------------

async function loadBisect(id, gen) {
  const { api, h, HttpError, isOffline } = kit();
  try {
    const b = await api(`/bisects/${id}`);
    if (gen !== state.gen) return;
    pageState(null);
    show('detail');
    render(b);
    if (b.status === 'running') later(gen, () => loadBisect(id, gen));
  } catch (e) {
    if (gen !== state.gen) return;
    if (e instanceof HttpError && e.status === 404) {
      show(null);
      pageState('missing', `Bisect #${id} does not exist.`, h('a', { href: '#/bisects', text: 'All bisects' }));
      return;
    }
    pageState('error', isOffline(e) ? 'Cannot reach the server — retrying…' : `${e.message} — retrying…`);
    later(gen, () => loadBisect(id, gen));
  }
}

function render(b) {
  const { tid, h, parseTime, fmtAge, fmtDateTime, deniedReason } = kit();
  state.bisect = b;
  const status = tid('bisect-status');
  status.replaceWith(badge(b.status, 'bisect-status'));
  tid('bisect-id').textContent = `#${b.id}`;
  tid('bisect-name').textContent = `bisect of ${rev(b.good)} .. ${rev(b.bad)}`;
  tid('bisect-repo').textContent = b.repo;
  tid('bisect-good').textContent = end(b.good, b.good_commit);
  tid('bisect-good').title = b.good_commit || b.good;
  tid('bisect-bad').textContent = end(b.bad, b.bad_commit);
  tid('bisect-bad').title = b.bad_commit || b.bad;
  tid('bisect-range').textContent = b.range_size == null ? 'not read yet'
    : `${b.range_size} commit${b.range_size === 1 ? '' : 's'}`;
  tid('bisect-case').textContent = b.case ? `case ${b.case}` : 'the step queue’s verdict';
  const created = parseTime(b.created_at);
  tid('bisect-created').textContent = fmtAge(created);
  tid('bisect-created').title = fmtDateTime(created);
  tid('bisect-submitter').textContent = b.submitted_by || 'anonymous';
  tid('bisect-scenarios').textContent = b.scenarios ? b.scenarios.join(', ') : 'repository default';

  const result = tid('bisect-result');
  result.hidden = !b.result;
  if (b.result) {
    result.replaceChildren(
      h('div', { class: 'small muted', text: 'First bad commit' }),
      h('div', { class: 'mono', testid: 'bisect-result-commit', text: b.result.commit }),
      h('div', { class: 'bisect-subject', testid: 'bisect-result-subject', text: b.result.subject }),
      h('div', { class: 'muted', testid: 'bisect-result-author', text: b.result.author }));
  }
  const message = tid('bisect-message');
  message.hidden = !b.message;
  message.textContent = b.message || '';

  const running = b.status === 'running';
  const abort = tid('bisect-abort-button');
  const reason = deniedReason('abort', b).replace('this queue', 'this bisect');
  abort.hidden = !running;
  tid('bisect-bar').hidden = !running;
  abort.disabled = state.busy || !!reason;
  abort.title = reason;
  const current = tid('bisect-current');
  current.replaceChildren();
  if (running && b.current_queue) current.append('waiting for step queue ', queueLink(b.current_queue));
  else if (running) current.append('a worker is deciding the next step…');

  tid('bisect-steps').replaceChildren(...b.steps.map((s, i) => {
    const queues = h('td', null, queueLink(s.queue_id));
    if (s.rerun_queue_id) queues.append(', ', queueLink(s.rerun_queue_id), h('span', { class: 'muted small', text: ' re-run' }));
    const verdict = h('td', null, s.verdict ? badge(s.verdict) : h('span', { class: 'muted', text: 'testing…' }));
    if (s.note) verdict.append(h('div', { class: 'muted small', text: s.note }));
    return h('tr', { testid: 'bisect-step', 'data-verdict': s.verdict || '', class: b.result && b.result.commit === s.commit ? 'culprit' : null },
      h('td', { text: String(i + 1) }),
      h('td', { class: 'mono', title: s.commit, text: `${sha(s.commit)} (${s.index} of ${b.range_size ?? '?'})` }),
      h('td', { class: 'bisect-subject', text: s.subject }),
      h('td', { class: 'muted', text: s.author }),
      queues,
      verdict);
  }));
  tid('bisect-steps-empty').hidden = b.steps.length > 0 || !running;
  document.title = `Bisect #${b.id} · ${b.status} — TestArena`;
}

async function onAbort() {
  const { confirmDialog, api, toast, isOffline } = kit();
  const b = state.bisect;
  if (!b || state.busy) return;
  const ok = await confirmDialog({
    title: `Abort bisect #${b.id}?`,
    body: 'The bisect ends as aborted and its running step queue is aborted too. Its steps so far are kept.',
    ok: 'Abort bisect',
  });
  if (!ok) return;
  state.busy = true;
  render(b);
  try {
    const now = await api(`/bisects/${b.id}/abort`, { method: 'POST' });
    if (state.id === b.id) render(now);
    toast(`Bisect #${b.id} aborted.`);
  } catch (e) {
    toast(isOffline(e) ? 'Cannot reach the server — try again in a moment.' : e.message, 'error');
  } finally {
    state.busy = false;
    if (state.bisect && state.id === b.id) render(state.bisect);
  }
}

// ---------------------------------------------------------------------------------------------
// Routing (see routeOtherPage in app.js)
// ---------------------------------------------------------------------------------------------

let wired = false;

(window.__testarenaPages = window.__testarenaPages || []).push({
  match(hash) {
    if (/^#\/bisects\/?$/.test(hash)) return { list: true };
    const m = /^#\/bisects\/(\d+)\/?$/.exec(hash);
    return m ? { id: Number(m[1]) } : null;
  },
  open(args, first) {
    const { tid } = kit();
    if (!wired) {
      wired = true;
      tid('bisect-abort-button').addEventListener('click', onAbort);
    }
    stop();
    const gen = state.gen;
    window.scrollTo(0, 0);
    if (args.list) {
      state.id = null;
      show('list');
      document.title = 'Bisects — TestArena';
      pageState('loading', 'Loading bisects…');
      loadList(gen);
      if (!first) document.getElementById('bisects-title').focus({ preventScroll: true });
      return;
    }
    if (state.id !== args.id) state.bisect = null;
    state.id = args.id;
    document.title = `Bisect #${args.id} — TestArena`;
    if (state.bisect) {
      show('detail');
      render(state.bisect);
    } else {
      show(null);
      pageState('loading', `Loading bisect #${args.id}…`);
    }
    loadBisect(args.id, gen);
    if (!first) document.getElementById('bisect-title').focus({ preventScroll: true });
  },
  close() {
    stop();
    state.view = null;
    kit().tid('view-bisect').hidden = true;
  },
});
